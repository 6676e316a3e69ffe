use super::lines::*;

#[test]
fn a_probe_reads_back_as_written() {
    let mut out = Vec::new();
    write_probe(42, 1_234_567, 64, &mut out);
    assert_eq!(out.len(), 65);
    assert_eq!(out.last(), Some(&b'\n'));
    let text = std::str::from_utf8(&out[..64]).unwrap();
    assert!(text.starts_with("0000000042 000000001234567 "), "{text}");
    assert_eq!(
        read_probe(text, 64),
        Ok(Probe {
            seq: 42,
            sent_ns: 1_234_567
        })
    );
}

#[test]
fn the_smallest_probe_has_no_padding() {
    let mut out = Vec::new();
    write_probe(7, 8, PROBE_HEADER, &mut out);
    let text = std::str::from_utf8(&out[..PROBE_HEADER]).unwrap();
    assert_eq!(
        read_probe(text, PROBE_HEADER),
        Ok(Probe { seq: 7, sent_ns: 8 })
    );
}

#[test]
fn damaged_probes_are_caught() {
    let mut out = Vec::new();
    write_probe(5, 6, 40, &mut out);
    let good = std::str::from_utf8(&out[..40]).unwrap().to_string();
    assert_eq!(
        read_probe(&good[..39], 40),
        Err(ProbeError::Length {
            expected: 40,
            found: 39
        })
    );
    let mut flipped = good.clone().into_bytes();
    flipped[33] = b'!';
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(
        read_probe(&flipped, 40),
        Err(ProbeError::Padding { at: 33 })
    );
    let garbled = good.replacen("0000000005", "00000000x5", 1);
    assert_eq!(read_probe(&garbled, 40), Err(ProbeError::Header));
}

#[test]
fn padding_differs_between_lines() {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    write_probe(1, 0, 40, &mut a);
    write_probe(2, 0, 40, &mut b);
    assert_ne!(a[PROBE_HEADER..], b[PROBE_HEADER..]);
}

#[test]
fn chat_lines_are_classified_as_protocol_section_4_says() {
    assert_eq!(
        classify("* welcome guest3; room lobby; 4 online; /help for commands"),
        ChatLine::Welcome { nick: "guest3" }
    );
    assert_eq!(
        classify("* guest3 joined lobby"),
        ChatLine::Joined { nick: "guest3" }
    );
    assert_eq!(classify("* guest3 left lobby"), ChatLine::Notice);
    assert_eq!(classify("* guest3 left lobby (too slow)"), ChatLine::Notice);
    assert_eq!(
        classify("! error: line too long"),
        ChatLine::Error("error: line too long")
    );
    assert_eq!(
        classify("2026-11-03 09:05:01 guest3: hello: world"),
        ChatLine::Said {
            nick: "guest3",
            text: "hello: world"
        }
    );
    assert_eq!(
        classify("2026-11-03 09:05:01 ann -> bob: psst"),
        ChatLine::Unknown
    );
    assert_eq!(classify("garbage"), ChatLine::Unknown);
}
