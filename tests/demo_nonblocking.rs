//! Executable documentation for `socketlab demo nonblocking`: one test per
//! behaviour the demo narrates, each running the experiment on real
//! loopback sockets and asserting what the kernel answered.
//!
//! Run with `cargo test --test demo_nonblocking`. Figures that depend on the
//! kernel (buffer sizes, timings) are checked as relations, not numbers.

use socketlab::demo::nonblocking::{
    self, EXPERIMENTS, Facts, accept, connect, edge, framing, nagle, recv, send, timeout,
};
use socketlab::demo::report::{Mode, Outcome};

// ---------------------------------------------------------------------------
// 1. accept()

#[test]
fn accept_on_a_nonblocking_listener_with_nothing_pending_would_block() {
    let facts = accept::run().unwrap().facts;
    assert_eq!(facts.nothing_pending_errno, Some("EAGAIN"));
}

#[test]
fn a_connecting_client_makes_the_listener_readable_and_accept_returns_its_connection() {
    let facts = accept::run().unwrap().facts;
    assert!(facts.listener_became_readable);
    assert!(facts.accepted_the_client);
}

// ---------------------------------------------------------------------------
// 2. connect()

#[test]
fn a_nonblocking_connect_returns_einprogress_before_the_handshake_completes() {
    let facts = connect::run().unwrap().facts;
    assert_eq!(facts.connect_errno, Some("EINPROGRESS"));
}

#[test]
fn a_connecting_socket_becomes_writable_and_so_error_reports_success() {
    let facts = connect::run().unwrap().facts;
    assert!(facts.became_writable);
    assert_eq!(facts.so_error, None);
}

#[test]
fn a_nonblocking_connect_to_a_closed_port_reports_econnrefused_through_so_error() {
    let facts = connect::run().unwrap().facts;
    assert_eq!(facts.refused_connect_errno, Some("EINPROGRESS"));
    assert!(facts.refused_became_writable);
    assert_eq!(facts.refused_so_error, Some("ECONNREFUSED"));
}

// ---------------------------------------------------------------------------
// 3. recv()

#[test]
fn recv_with_no_data_would_block() {
    assert_eq!(recv::run().unwrap().facts.no_data_errno, Some("EAGAIN"));
}

#[test]
fn recv_after_the_peer_sent_returns_the_bytes() {
    assert_eq!(recv::run().unwrap().facts.data.as_deref(), Some("hello"));
}

#[test]
fn recv_after_the_peer_closed_returns_zero_bytes_for_end_of_stream() {
    assert!(recv::run().unwrap().facts.eof_after_close);
}

#[test]
fn recv_after_the_peer_reset_the_connection_fails_with_econnreset() {
    assert_eq!(recv::run().unwrap().facts.reset_errno, Some("ECONNRESET"));
}

// ---------------------------------------------------------------------------
// 4. send()

#[test]
fn send_in_a_loop_without_a_reader_ends_in_eagain() {
    let facts = send::run().unwrap().facts;
    assert_eq!(facts.final_errno, Some("EAGAIN"));
    assert!(facts.sends_accepted > 0);
}

#[test]
fn the_kernel_reports_at_least_the_buffer_sizes_requested() {
    // Linux doubles the requested value; other kernels may round it. It is
    // never smaller than asked for, at these modest sizes.
    let facts = send::run().unwrap().facts;
    assert!(facts.send_buffer >= facts.send_buffer_requested);
    assert!(facts.receive_buffer >= facts.receive_buffer_requested);
}

#[test]
fn the_bytes_accepted_before_eagain_are_bounded_by_the_two_socket_buffers() {
    let facts = send::run().unwrap().facts;
    // More than one chunk fits, and no more than both buffers together can
    // hold (their reported sizes include the kernel's bookkeeping, so the
    // payload is smaller still).
    assert!(facts.bytes_accepted > facts.chunk);
    assert!(facts.bytes_accepted <= facts.send_buffer + facts.receive_buffer);
    assert!(facts.bytes_in_receiver <= facts.bytes_accepted);
}

#[test]
fn a_send_larger_than_the_free_buffer_space_is_a_partial_write() {
    let facts = send::run().unwrap().facts;
    assert!(facts.partial_write_accepted > 0);
    assert!(facts.partial_write_accepted < facts.partial_write_requested);
}

// ---------------------------------------------------------------------------
// 5. blocking recv() with a timeout

#[test]
fn a_blocking_recv_with_a_timeout_fails_with_eagain_once_the_timeout_passes() {
    let finding = timeout::run().unwrap();
    let facts = finding.facts;
    assert_eq!(facts.errno, Some("EAGAIN"));
    assert_eq!(facts.error_kind.as_deref(), Some("WouldBlock"));
    // The call must really have slept. The kernel counts the timeout in
    // clock ticks, so allow one tick's rounding below the nominal value.
    assert!(facts.elapsed_ms >= facts.timeout_ms as f64 - 10.0);
    assert_eq!(
        finding.observations[0].mode,
        Mode::Timeout {
            timeout_ms: facts.timeout_ms
        }
    );
}

#[test]
fn a_settimeout_style_wait_is_non_blocking_and_times_out_in_poll_without_a_recv() {
    let finding = timeout::run().unwrap();
    let s = &finding.facts.settimeout;
    assert!(s.o_nonblock, "settimeout() leaves O_NONBLOCK set");
    assert!(s.poll_timed_out);
    assert!(!s.recv_called);
    assert_eq!(
        finding.observations[1].mode,
        Mode::Wait {
            timeout_ms: finding.facts.timeout_ms
        }
    );
    let note = &finding.observations[1].why;
    assert!(note.contains("TimeoutError"), "{note}");
    assert!(finding.observations[0].why.contains("BlockingIOError"));
}

// ---------------------------------------------------------------------------
// 6. message boundaries

#[test]
fn two_quick_tcp_sends_arrive_together_in_one_recv() {
    let facts = framing::run().unwrap().facts;
    assert_eq!(facts.tcp_sends, ["hello", "world"]);
    assert_eq!(facts.tcp_first_recv, "helloworld");
}

#[test]
fn a_length_prefix_lets_the_receiver_restore_the_message_boundaries() {
    let facts = framing::run().unwrap().facts;
    // Both frames came in one read, and the decoder separated them.
    assert_eq!(facts.framed_first_recv_bytes, 2 * 4 + 10);
    assert_eq!(facts.framed_messages, ["hello", "world"]);
}

#[test]
fn udp_returns_one_datagram_per_recv() {
    let facts = framing::run().unwrap().facts;
    assert_eq!(facts.udp_recvs, facts.udp_sends);
}

#[test]
fn a_datagram_larger_than_the_recv_buffer_is_truncated_and_its_tail_discarded() {
    let facts = framing::run().unwrap().facts;
    assert!(facts.large_datagram_len > facts.recv_buffer_len);
    // MSG_TRUNC reports the real length, although only the buffer's worth was copied.
    assert_eq!(facts.truncated_recv_returned, facts.large_datagram_len);
    // The next read gets the next datagram, not the rest of the large one.
    assert_eq!(facts.after_truncation, "next");
}

// ---------------------------------------------------------------------------
// 7. edge-triggered readiness

#[test]
fn an_edge_triggered_registration_that_is_not_drained_does_not_fire_again_for_old_data() {
    let facts = edge::run().unwrap().facts;
    assert!(facts.first_event_readable);
    assert!(facts.first_read < facts.first_message_len);
    assert_eq!(
        facts.left_unread,
        facts.first_message_len - facts.first_read
    );
    assert_eq!(facts.events_while_undrained, 0);
}

#[test]
fn level_triggered_poll_reports_the_undrained_socket_readable() {
    assert!(edge::run().unwrap().facts.level_triggered_readable);
}

#[test]
fn new_data_fires_the_edge_again_and_reading_until_eagain_takes_everything() {
    let facts = edge::run().unwrap().facts;
    assert!(facts.new_data_event_readable);
    assert_eq!(facts.drained, facts.left_unread + facts.second_message_len);
    assert_eq!(facts.drain_errno, Some("EAGAIN"));
}

// ---------------------------------------------------------------------------
// 8. Nagle

#[test]
fn write_write_read_rounds_complete_with_and_without_nagle() {
    // The times are informational (they depend on the kernel's ACK policy),
    // so only completeness is asserted: every round got its reply.
    let facts = nagle::run().unwrap().facts;
    assert_eq!(facts.nagle_rounds_completed, facts.rounds);
    assert_eq!(facts.nodelay_rounds_completed, facts.rounds);
    assert_eq!(facts.nagle_round_ms.len(), facts.rounds);
    assert!(facts.nagle_median_ms > 0.0 && facts.nodelay_median_ms > 0.0);
}

// ---------------------------------------------------------------------------
// The table and the narration

#[test]
fn the_experiments_are_numbered_one_to_eight_in_order() {
    let numbers: Vec<u8> = EXPERIMENTS.iter().map(|e| e.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(nonblocking::run_step(9).is_none());
}

#[test]
fn a_step_carries_its_number_its_facts_and_a_narration_naming_the_errno() {
    let step = nonblocking::run_step(1).unwrap().unwrap();
    assert_eq!(step.step, 1);
    assert!(matches!(step.facts, Facts::Accept(_)));
    assert_eq!(step.observations[0].mode, Mode::NonBlocking);
    assert_eq!(step.observations[0].outcome.errno(), Some("EAGAIN"));
    let text = nonblocking::render_step(&step);
    assert!(text.contains("Experiment 1:"));
    assert!(text.contains("error EAGAIN"));
    assert!(text.contains("why"));
}

#[test]
fn every_observation_names_its_call_and_says_why() {
    for number in [1, 2, 3, 6, 7] {
        let step = nonblocking::run_step(number).unwrap().unwrap();
        assert!(!step.observations.is_empty(), "step {number}");
        for observation in &step.observations {
            assert!(!observation.call.is_empty(), "step {number}");
            assert!(
                !observation.why.is_empty(),
                "step {number}: {}",
                observation.call
            );
            // An error outcome from the kernel always carries its errno name.
            if let Outcome::Error {
                code: Some(_),
                errno,
                ..
            } = &observation.outcome
            {
                assert!(errno.is_some(), "step {number}: {}", observation.call);
            }
        }
    }
}
