//! files requests (PROTOCOL.md §5.5): pwd, cd, ls, mkdir, rm, quota, bye,
//! bad frames, and the jail.
//! Run: `cargo test --test files_requests`.

mod common;
mod exec_support;
mod files_support;

use serde_json::{Value, json};

use common::Daemon;
use files_support::*;

fn logged_in() -> (Daemon, std::net::TcpStream) {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    let s = login(&d, "alice", "pw");
    (d, s)
}

fn names(listing: &Value) -> Vec<String> {
    listing["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {listing}"))
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

// ---- The requests ----

#[test]
fn mkdir_cd_pwd_ls_and_rm_behave_as_the_table_says() {
    let (_d, mut s) = logged_in();
    let ok = json!({"type": "ok"});
    assert_eq!(ask(&mut s, json!({"type": "mkdir", "path": "b"})), ok);
    assert_eq!(ask(&mut s, json!({"type": "mkdir", "path": "/a"})), ok);
    assert_eq!(ask(&mut s, json!({"type": "mkdir", "path": "a/sub"})), ok);
    // An existing name and a missing parent are errors.
    assert!(
        ask(&mut s, json!({"type": "mkdir", "path": "a"}))["error"]
            .as_str()
            .unwrap()
            .contains("exists")
    );
    assert_eq!(
        ask(&mut s, json!({"type": "mkdir", "path": "x/y"}))["type"],
        "error"
    );
    assert_eq!(put(&mut s, "a/f.txt", b"hello")["type"], "ok");

    let listing = ask(&mut s, json!({"type": "ls"}));
    assert_eq!(names(&listing), ["a", "b"]);
    let a = &listing["entries"][0];
    assert_eq!(
        (a["kind"].clone(), a["size"].clone()),
        (json!("dir"), json!(0))
    );
    assert!(a["mtime"].as_u64().unwrap() > 1_600_000_000);

    assert_eq!(
        ask(&mut s, json!({"type": "cd", "path": "a/sub"})),
        json!({"type": "ok", "cwd": "/a/sub"})
    );
    assert_eq!(
        ask(&mut s, json!({"type": "pwd"})),
        json!({"type": "ok", "cwd": "/a/sub"})
    );
    let up = ask(&mut s, json!({"type": "ls", "path": ".."}));
    assert_eq!(names(&up), ["f.txt", "sub"]);
    assert_eq!(up["entries"][0]["kind"], "file");
    assert_eq!(up["entries"][0]["size"], 5);
    assert_eq!(
        ask(&mut s, json!({"type": "cd", "path": "../f.txt"}))["type"],
        "error",
        "cd into a file"
    );
    assert_eq!(
        ask(&mut s, json!({"type": "cd", "path": "/"})),
        json!({"type": "ok", "cwd": "/"})
    );

    // rm: a non-empty directory is refused, a file and an empty one go.
    assert!(
        ask(&mut s, json!({"type": "rm", "path": "a"}))["error"]
            .as_str()
            .unwrap()
            .contains("not empty")
    );
    assert_eq!(ask(&mut s, json!({"type": "rm", "path": "a/f.txt"})), ok);
    assert_eq!(ask(&mut s, json!({"type": "rm", "path": "a/sub"})), ok);
    assert_eq!(ask(&mut s, json!({"type": "rm", "path": "a"})), ok);
    assert_eq!(
        ask(&mut s, json!({"type": "rm", "path": "a"}))["type"],
        "error"
    );
    assert_eq!(names(&ask(&mut s, json!({"type": "ls"}))), ["b"]);
}

#[test]
fn bye_answers_ok_and_closes() {
    let (_d, mut s) = logged_in();
    assert_eq!(ask(&mut s, json!({"type": "bye"})), json!({"type": "ok"}));
    expect_closed(&mut s);
}

#[test]
fn unknown_and_malformed_requests_get_errors_and_the_connection_stays() {
    let (_d, mut s) = logged_in();
    for bad in [
        json!({"type": "dance"}),
        json!({"type": "cd"}),
        json!({"type": "put", "path": "f", "size": 1, "sha256": "nothex"}),
        json!({"type": "get", "path": 7}),
    ] {
        assert_eq!(ask(&mut s, bad.clone())["type"], "error", "{bad}");
    }
    assert_eq!(ask(&mut s, json!({"type": "pwd"}))["cwd"], "/");
    // Invalid JSON breaks the framing: error, then close.
    send_raw_frame(&mut s, b"{not json");
    expect_error(&mut s);
    expect_closed(&mut s);
}

// ---- The jail ----

#[test]
fn escapes_are_refused_everywhere() {
    let (d, mut s) = logged_in();
    std::fs::write(d.data_dir().join("outside.txt"), b"secret").unwrap();
    let long = "x".repeat(256);
    let escapes = [
        "..",
        "../outside.txt",
        "/../../outside.txt",
        "a/../../..",
        "nul\0byte",
        long.as_str(),
    ];
    for path in escapes {
        for request in [
            json!({"type": "cd", "path": path}),
            json!({"type": "ls", "path": path}),
            json!({"type": "mkdir", "path": path}),
            json!({"type": "rm", "path": path}),
            json!({"type": "get", "path": path}),
            json!({"type": "put", "path": path, "size": 1, "sha256": sha_hex(b"x")}),
        ] {
            let answer = ask(&mut s, request.clone());
            assert_eq!(answer["type"], "error", "{request} -> {answer}");
            assert_eq!(answer["code"], "bad_path", "{request} -> {answer}");
        }
    }
    // An absolute path is taken from the home, not the system's root.
    assert_eq!(
        ask(&mut s, json!({"type": "get", "path": "/etc/passwd"}))["type"],
        "error"
    );
    assert_eq!(
        ask(&mut s, json!({"type": "cd", "path": "/etc"}))["type"],
        "error"
    );
    assert!(d.data_dir().join("outside.txt").exists());
}

#[test]
fn a_symlink_made_out_of_band_cannot_lead_out() {
    let (d, mut s) = logged_in();
    let outside = d.data_dir().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    let home = home(&d, "alice");
    std::os::unix::fs::symlink(&outside, home.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), home.join("secret")).unwrap();
    std::os::unix::fs::symlink("../..", home.join("up")).unwrap();
    for request in [
        json!({"type": "get", "path": "out/secret"}),
        json!({"type": "get", "path": "secret"}),
        json!({"type": "cd", "path": "out"}),
        json!({"type": "cd", "path": "up"}),
        json!({"type": "ls", "path": "up"}),
        json!({"type": "mkdir", "path": "out/new"}),
        json!({"type": "put", "path": "out/new", "size": 1, "sha256": sha_hex(b"x")}),
    ] {
        let answer = ask(&mut s, request.clone());
        assert_eq!(answer["type"], "error", "{request} -> {answer}");
    }
    assert!(!outside.join("new").exists());
    // Removing a symlink removes the link only.
    assert_eq!(
        ask(&mut s, json!({"type": "rm", "path": "secret"}))["type"],
        "ok"
    );
    assert!(outside.join("secret").exists());
    // ls does not show symlinks.
    assert_eq!(
        names(&ask(&mut s, json!({"type": "ls"}))),
        Vec::<String>::new()
    );
}

#[test]
fn users_cannot_see_each_other() {
    let d = Daemon::start(&[]);
    add_user(&d, "alice", "pw", None);
    add_user(&d, "bob", "pw", None);
    let mut a = login(&d, "alice", "pw");
    assert_eq!(put(&mut a, "mine", b"alice's")["type"], "ok");
    let mut b = login(&d, "bob", "pw");
    assert_eq!(
        ask(&mut b, json!({"type": "get", "path": "/mine"}))["type"],
        "error"
    );
    assert_eq!(
        ask(&mut b, json!({"type": "get", "path": "../alice/mine"}))["code"],
        "bad_path"
    );
}

#[test]
fn put_is_refused_before_ready_for_a_directory_or_a_missing_parent() {
    let (d, mut s) = logged_in();
    assert_eq!(
        ask(&mut s, json!({"type": "mkdir", "path": "d"}))["type"],
        "ok"
    );
    let sum = sha_hex(b"x");
    let in_the_way = ask(
        &mut s,
        json!({"type": "put", "path": "d", "size": 1, "sha256": sum}),
    );
    assert_eq!(in_the_way["error"], "is a directory", "{in_the_way}");
    let no_parent = ask(
        &mut s,
        json!({"type": "put", "path": "nope/f", "size": 1, "sha256": sum}),
    );
    assert_eq!(
        no_parent["error"], "no such file or directory",
        "{no_parent}"
    );
    let home_itself = ask(
        &mut s,
        json!({"type": "put", "path": "/", "size": 1, "sha256": sum}),
    );
    assert_eq!(home_itself["type"], "error");
    // Nothing was reserved or staged by the refusals.
    assert_eq!(ask(&mut s, json!({"type": "quota"}))["used"], 0);
    assert!(staged(&d, "alice").is_empty());
}

#[test]
fn pipelined_requests_are_answered_in_order_even_around_a_download() {
    let (_d, mut s) = logged_in();
    assert_eq!(put(&mut s, "f", &payload(500_000, 1))["type"], "ok");
    // Everything in one write: the daemon holds what follows the get
    // while it sends the file, then answers the rest.
    let mut bytes = Vec::new();
    for request in [
        json!({"type": "mkdir", "path": "p"}),
        json!({"type": "cd", "path": "p"}),
        json!({"type": "get", "path": "/f"}),
        json!({"type": "pwd"}),
        json!({"type": "bye"}),
    ] {
        let header = serde_json::to_vec(&request).unwrap();
        bytes.extend_from_slice(&(header.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&header);
    }
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    assert_eq!(recv(&mut s), json!({"type": "ok"}));
    assert_eq!(recv(&mut s), json!({"type": "ok", "cwd": "/p"}));
    let ready = recv(&mut s);
    assert_eq!(ready["size"], 500_000);
    let body = common::read_exact_n(&mut s, 500_000);
    assert_eq!(body, payload(500_000, 1));
    assert_eq!(recv(&mut s), json!({"type": "ok", "cwd": "/p"}));
    assert_eq!(recv(&mut s), json!({"type": "ok"}));
    expect_closed(&mut s);
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let d = Daemon::start(&["--set", "files.idle_timeout_s=1"]);
    add_user(&d, "alice", "pw", None);
    let mut s = login(&d, "alice", "pw");
    let started = std::time::Instant::now();
    expect_closed(&mut s);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}
