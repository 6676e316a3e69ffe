//! Fan-out and pacing: how a line reaches a room (`tell`), and how much
//! a callback may say before the room's fullest member is at its limit
//! (the module docs' "Bursts"; hub.rs's "Pacing across reactors").

use bytes::Bytes;

use super::{Change, Command, MemberId, Rooms, Sequencer, Session, parse};
use crate::services::Cx;

impl Session {
    /// How many more bytes every member of our room can be given before the
    /// fullest one reaches the output limit (0 when one is there already).
    /// O(members of the room on this reactor), once per callback: the same
    /// order as one broadcast to it. Members on other reactors count by
    /// the figures their reactors published (hub.rs, "Pacing across
    /// reactors").
    pub(super) fn room_headroom(&self, cx: &mut Cx<'_>) -> usize {
        let limit = cx.output_limit();
        let me = MemberId::of(cx);
        let mut fullest = cx.pending_output();
        let dir = self.hub.directory();
        let Some(room) = dir.member(me).map(|m| m.room.clone()) else {
            return limit.saturating_sub(fullest);
        };
        match self.hub.sequencer() {
            Sequencer::Local => {
                for m in dir.members_of(&room) {
                    if *m != me {
                        fullest = fullest.max(cx.pending_output_of(m.token, m.serial));
                    }
                }
            }
            Sequencer::Inboxes(inboxes) => {
                let elsewhere = inboxes.fullest_elsewhere(&dir, &room, me.reactor);
                drop(dir);
                // Our own reactor's members, seen directly. The list cannot
                // be borrowed while `cx` is asked, so it is copied into a
                // scratch list that keeps its capacity between calls.
                let hosted = &mut cx.shared().chat;
                let mut members = std::mem::take(&mut hosted.scratch);
                members.clear();
                members.extend_from_slice(hosted.members(&room));
                for m in &members {
                    if *m != me {
                        fullest = fullest.max(cx.pending_output_of(m.token, m.serial));
                    }
                }
                cx.shared().chat.scratch = members;
                // Lines other callbacks of this turn left in our own inbox
                // reach our members at this turn's drain step: count them
                // as theirs already, as the other reactors' are counted.
                fullest = (fullest + inboxes.waiting(me.reactor)).max(elsewhere);
            }
        }
        limit.saturating_sub(fullest)
    }

    /// Whether `line` is a `/msg` to a member whose output is at the limit:
    /// a private flood is held like a room's (see "Bursts"). A member on
    /// another reactor is judged by its room's published figure there.
    pub(super) fn addressee_is_full(&self, line: &[u8], cx: &mut Cx<'_>) -> bool {
        let Ok(Command::Msg { to, .. }) = std::str::from_utf8(line)
            .map_err(|_| ())
            .and_then(|l| parse(l).map_err(|_| ()))
        else {
            return false;
        };
        let me = MemberId::of(cx);
        let dir = self.hub.directory();
        let Some(id) = dir.find(to) else {
            return false;
        };
        if id == me {
            return false;
        }
        if id.reactor == me.reactor {
            return cx.pending_output_of(id.token, id.serial) >= cx.output_limit();
        }
        let Some(room) = dir.member(id).map(|m| m.room.as_str()) else {
            return false;
        };
        dir.fullest_on(room, id.reactor) >= cx.output_limit()
    }
}

/// Tells `room` the `line` (if any) with the membership `change` it
/// announces, in the room's one order, while the caller holds the
/// directory `dir`. With one reactor that is the fan-out itself: the same
/// [`Bytes`] queued for every member, so the text exists once however
/// many there are, the caller's own copy included. With several it is one
/// push per reactor hosting the room, whose drain does the fan-out
/// (hub.rs). Returns the number of recipients; bytes posted to inboxes
/// are added to `posted`.
pub(super) fn tell(
    cx: &mut Cx<'_>,
    sequencer: &Sequencer,
    dir: &Rooms,
    room: &str,
    change: Change,
    line: Option<Bytes>,
    posted: &mut usize,
) -> usize {
    let recipients = dir.members_of(room);
    let count = if line.is_some() { recipients.len() } else { 0 };
    match sequencer {
        Sequencer::Local => {
            let Some(line) = line else {
                return 0;
            };
            let (token, serial) = (cx.token(), cx.serial());
            for m in recipients {
                if m.token == token && m.serial == serial {
                    cx.write_shared(line.clone());
                } else {
                    cx.send_to(m.token, m.serial, line.clone());
                }
            }
        }
        Sequencer::Inboxes(inboxes) => {
            *posted += line.as_ref().map_or(0, Bytes::len);
            // The letters come from the drains, on every reactor hosting
            // the room; this reactor's turn budget counts them all, so
            // it accepts a burst of newcomers as it would alone.
            cx.owe_letters(count);
            inboxes.post(dir, room, change, line);
        }
    }
    cx.trace(format_args!(
        "#{} chat broadcast to {count} members",
        cx.token()
    ));
    count
}
