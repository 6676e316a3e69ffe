//! The link thread's Redis commands: publishing, nick claims, presence and
//! the heartbeat. Each is one blocking call (or one pipeline) on the
//! commands connection, and returns the error as one line for the log and
//! the members' notice.

use std::sync::atomic::Ordering;

use redis::Connection;

use super::link::{Claim, Event, GUEST_TRIES, LinkThread, RELEASE_SCRIPT, describe};
use super::wire::{
    Body, DAEMONS_KEY, EVENTS_CHANNEL, Envelope, GUEST_COUNTER_KEY, alive_key, members_key,
    nick_key,
};

impl LinkThread {
    /// Publishes a batch in one pipeline, with the presence changes it
    /// carries. On failure the room messages come back to be delivered
    /// locally.
    pub(super) fn publish(
        &mut self,
        conn: &mut Connection,
        batch: Vec<(String, Body)>,
    ) -> Result<(), String> {
        let me = self.config.daemon.clone();
        let members = members_key(&me);
        let mut pipe = redis::pipe();
        for (channel, body) in &batch {
            self.seq += 1;
            let envelope = Envelope {
                from: me.clone(),
                seq: self.seq,
                body: body.clone(),
            };
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(envelope.encode())
                .ignore();
            match body {
                Body::Joined { room, nick, .. } => {
                    pipe.cmd("HSET").arg(&members).arg(nick).arg(room).ignore();
                }
                Body::Left { nick, .. } => {
                    pipe.cmd("HDEL").arg(&members).arg(nick).ignore();
                }
                Body::Renamed {
                    room, old, nick, ..
                } => {
                    pipe.cmd("HDEL").arg(&members).arg(old).ignore();
                    pipe.cmd("HSET").arg(&members).arg(nick).arg(room).ignore();
                }
                Body::Say { .. } | Body::Msg { .. } | Body::Bye => {}
            }
        }
        match pipe.query::<()>(conn) {
            Ok(()) => {
                let n = batch.len() as u64;
                self.stats.published.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                for (_, body) in batch {
                    self.bounce(body);
                }
                Err(describe(&e))
            }
        }
    }

    /// A room message that was not published goes back to the loop, which
    /// delivers it to this daemon's members only.
    pub(super) fn bounce(&self, body: Body) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        if body.room().is_some() {
            self.wake.send(Event::Bounced(body));
        }
    }

    pub(super) fn claim(&mut self, conn: &mut Connection, nick: Option<&str>) -> Claim {
        let result = match nick {
            Some(nick) => self
                .claim_one(conn, nick)
                .map(|won| won.then(|| nick.to_string())),
            None => self.claim_guest(conn),
        };
        match result {
            Ok(Some(nick)) => {
                self.claimed.insert(nick.clone());
                Claim::Granted(nick)
            }
            Ok(None) => Claim::Taken,
            Err(e) => Claim::Unavailable(e),
        }
    }

    /// `SET chat:nick:<n> <id> NX EX <ttl>`; a nick this daemon already
    /// holds counts as won (a member taking back its own old nick).
    fn claim_one(&self, conn: &mut Connection, nick: &str) -> Result<bool, String> {
        let key = nick_key(nick);
        let me = &self.config.daemon;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(me)
            .arg("NX")
            .arg("EX")
            .arg(self.config.nick_ttl.as_secs())
            .query(conn)
            .map_err(|e| describe(&e))?;
        if set.is_some() {
            return Ok(true);
        }
        let owner: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query(conn)
            .map_err(|e| describe(&e))?;
        Ok(owner.as_deref() == Some(me.as_str()))
    }

    fn claim_guest(&self, conn: &mut Connection) -> Result<Option<String>, String> {
        for _ in 0..GUEST_TRIES {
            let k: u64 = redis::cmd("INCR")
                .arg(GUEST_COUNTER_KEY)
                .query(conn)
                .map_err(|e| describe(&e))?;
            let nick = format!("guest{k}");
            if self.claim_one(conn, &nick)? {
                return Ok(Some(nick));
            }
        }
        Ok(None)
    }

    pub(super) fn release(&mut self, conn: &mut Connection, nick: &str) -> Result<(), String> {
        self.claimed.remove(nick);
        redis::cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(nick_key(nick))
            .arg(&self.config.daemon)
            .query::<()>(conn)
            .map_err(|e| describe(&e))
    }

    /// Claims this daemon's members' nicks again and rewrites its presence
    /// hash: after an outage, Redis may have forgotten both (it restarted,
    /// or the TTLs ran out). A nick another daemon took meanwhile is a
    /// conflict: logged and counted, and the member keeps it here.
    pub(super) fn present(
        &mut self,
        conn: &mut Connection,
        members: Vec<(String, String)>,
    ) -> Result<(), String> {
        self.claimed.clear();
        for (nick, _) in &members {
            if self.claim_one(conn, nick)? {
                self.claimed.insert(nick.clone());
            } else {
                log::warn!("chat cluster: nick {nick} is held by another daemon too");
            }
        }
        let key = members_key(&self.config.daemon);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&key).ignore();
        for (nick, room) in &members {
            pipe.cmd("HSET").arg(&key).arg(nick).arg(room).ignore();
        }
        pipe.query::<()>(conn).map_err(|e| describe(&e))?;
        self.heartbeat(conn)
    }

    /// Says this daemon is alive, refreshes its claims and presence, clears
    /// away daemons whose heartbeat expired, and sends the loop the others'
    /// members.
    pub(super) fn heartbeat(&mut self, conn: &mut Connection) -> Result<(), String> {
        let me = &self.config.daemon;
        let ttl = self.config.nick_ttl.as_secs();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(alive_key(me))
            .arg(1)
            .arg("EX")
            .arg(ttl)
            .ignore();
        pipe.cmd("SADD").arg(DAEMONS_KEY).arg(me).ignore();
        pipe.cmd("EXPIRE").arg(members_key(me)).arg(ttl).ignore();
        for nick in &self.claimed {
            pipe.cmd("EXPIRE").arg(nick_key(nick)).arg(ttl).ignore();
        }
        pipe.query::<()>(conn).map_err(|e| describe(&e))?;

        let daemons: Vec<String> = redis::cmd("SMEMBERS")
            .arg(DAEMONS_KEY)
            .query(conn)
            .map_err(|e| describe(&e))?;
        let mut others = Vec::new();
        for daemon in daemons.into_iter().filter(|d| d != me) {
            let alive: bool = redis::cmd("EXISTS")
                .arg(alive_key(&daemon))
                .query(conn)
                .map_err(|e| describe(&e))?;
            if !alive {
                let mut pipe = redis::pipe();
                pipe.cmd("SREM").arg(DAEMONS_KEY).arg(&daemon).ignore();
                pipe.cmd("DEL").arg(members_key(&daemon)).ignore();
                pipe.query::<()>(conn).map_err(|e| describe(&e))?;
                continue;
            }
            let members: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(members_key(&daemon))
                .query(conn)
                .map_err(|e| describe(&e))?;
            others.push((daemon, members));
        }
        self.wake.send(Event::Snapshot(others));
        Ok(())
    }

    /// On the way out: says `bye`, frees the nicks and the presence. Best
    /// effort; the TTLs free what this misses.
    pub(super) fn give_back(&mut self, conn: &mut Connection) {
        let _ = self.publish(conn, vec![(EVENTS_CHANNEL.to_string(), Body::Bye)]);
        let me = self.config.daemon.clone();
        for nick in std::mem::take(&mut self.claimed) {
            let _ = self.release(conn, &nick);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(alive_key(&me)).ignore();
        pipe.cmd("DEL").arg(members_key(&me)).ignore();
        pipe.cmd("SREM").arg(DAEMONS_KEY).arg(&me).ignore();
        let _ = pipe.query::<()>(conn);
    }
}
