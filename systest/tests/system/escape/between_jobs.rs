//! Escape attempts: isolation between jobs.

use super::*;

#[tokio::test]
async fn a_file_left_in_tmp_is_gone_for_the_next_job() {
    let sandbox = sandbox().await;
    let first = sandbox
        .contain(&py(r#"
            def main():
                with open("/tmp/leftover", "w") as f:
                    f.write("secret of the first job")
                return "written"
        "#))
        .await;
    assert_result(&first, &json!("written"));
    let second = sandbox
        .contain("import os\n\ndef main():\n    return os.listdir('/tmp')\n")
        .await;
    assert_result(&second, &json!([]));
}

/// The neighbour writes a secret and then keeps running for `hold` seconds, reporting when.
pub(crate) fn holder(setup: &str, hold: f64) -> String {
    py(&format!(
        r#"
        import time

        def main():
            begin = time.time()
{}
            time.sleep({hold})
            return {{"begin": begin, "end": time.time()}}
        "#,
        setup
            .lines()
            .map(|line| format!("            {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

/// Asserts that the prober looked while the holder was running, so the isolation was tested
/// and not just the order of two jobs.
pub(crate) fn assert_overlapped(holder: &Value, prober: &Value) {
    assert_eq!(holder["status"], "succeeded", "{holder}");
    let begin = holder["result"]["begin"].as_f64().expect("begin");
    let end = holder["result"]["end"].as_f64().expect("end");
    let at = prober["result"]["at"].as_f64().expect("at");
    assert!(
        begin < at && at < end,
        "the jobs did not overlap: {holder} {prober}"
    );
}

#[tokio::test]
async fn concurrent_jobs_cannot_see_each_others_tmp() {
    let sandbox = sandbox().await;
    let hold = holder("open('/tmp/secret', 'w').write('of the neighbour')", 3.0);
    let probe = py(r#"
        import os
        import time

        def main():
            time.sleep(1)
            try:
                open("/tmp/secret").read()
                found = 0
            except OSError as e:
                found = e.errno
            return {"at": time.time(), "listing": os.listdir("/tmp"), "open": found}
    "#);
    let (holder, prober) = sandbox
        .alongside(json!({ "script": hold }), json!({ "script": probe }))
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["listing"], json!([]), "{prober}");
    assert_eq!(prober["result"]["open"], ENOENT, "{prober}");
}

#[tokio::test]
async fn concurrent_jobs_cannot_share_sysv_memory() {
    let sandbox = sandbox().await;
    // IPC_CREAT | 0o666 under a fixed key; the neighbour looks the key up.
    let setup = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                 assert libc.shmget(0x52554E42, 4096, 0o1666) >= 0";
    let hold = holder(setup, 3.0);
    let probe = py(r#"
        import ctypes
        import time

        def main():
            time.sleep(1)
            libc = ctypes.CDLL(None, use_errno=True)
            found = libc.shmget(0x52554E42, 0, 0)
            return {"at": time.time(), "shmget": ctypes.get_errno() if found < 0 else 0}
    "#);
    let (holder, prober) = sandbox
        .alongside(json!({ "script": hold }), json!({ "script": probe }))
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["shmget"], ENOENT, "{prober}");
}

#[tokio::test]
async fn concurrent_jobs_cannot_reach_each_others_abstract_sockets() {
    let sandbox = sandbox().await;
    let setup = "import socket\nserver = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
                 server.bind('\\0runbox-neighbour')\nserver.listen(1)";
    let hold = holder(setup, 3.0);
    let probe = py(r#"
        import socket
        import time

        def main():
            time.sleep(1)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect("\0runbox-neighbour")
                found = 0
            except OSError as e:
                found = e.errno
            return {"at": time.time(), "connect": found}
    "#);
    let (holder, prober) = sandbox
        .alongside(json!({ "script": hold }), json!({ "script": probe }))
        .await;
    assert_overlapped(&holder, &prober);
    assert_eq!(prober["result"]["connect"], ECONNREFUSED, "{prober}");
}
