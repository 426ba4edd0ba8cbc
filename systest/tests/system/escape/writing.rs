//! Escape attempts: what the jail can write.

use super::*;

#[tokio::test]
async fn creating_files_outside_tmp_fails_on_read_only_mounts() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            def main():
                seen = {}
                for path in ["/escape", "/usr/lib/python3.11/escape.py", "/dev/escape",
                             "/opt/runbox/python/escape", "/job/escape", "/lib64/escape"]:
                    try:
                        open(path, "w").close()
                        seen[path] = 0
                    except OSError as e:
                        seen[path] = e.errno
                return seen
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "/escape": EROFS,
            "/usr/lib/python3.11/escape.py": EROFS,
            "/dev/escape": EROFS,
            "/opt/runbox/python/escape": EROFS,
            "/job/escape": EROFS,
            "/lib64/escape": EROFS,
        }),
    );
}

#[tokio::test]
async fn overwriting_the_interpreter_the_harness_or_the_script_is_denied() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            def main():
                seen = {}
                for path in ["/usr/lib/python3.11/os.py", "/job/harness.py", "/job/script.py",
                             "/usr/bin/python3.11"]:
                    try:
                        open(path, "ab").close()
                        seen[path] = 0
                    except OSError as e:
                        seen[path] = e.errno
                return seen
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "/usr/lib/python3.11/os.py": EACCES,
            "/job/harness.py": EACCES,
            "/job/script.py": EACCES,
            "/usr/bin/python3.11": EACCES,
        }),
    );
}

#[tokio::test]
async fn filling_tmp_stops_at_64_mib() {
    let sandbox = sandbox().await;
    // Files of 16 MiB stay under the 32 MiB file size limit, so only /tmp's size can stop it.
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                written = 0
                chunk = b"x" * (1 << 20)
                for i in range(100):
                    fd = os.open(f"/tmp/fill-{i}", os.O_WRONLY | os.O_CREAT, 0o600)
                    try:
                        for _ in range(16):
                            written += os.write(fd, chunk)
                    except OSError as e:
                        return {"errno": e.errno, "mib": round(written / (1 << 20))}
                    finally:
                        os.close(fd)
                return {"written_mib": written >> 20}
        "#))
        .await;
    assert_result(&job, &json!({"errno": ENOSPC, "mib": 64}));
}

#[tokio::test]
async fn a_file_cannot_grow_past_32_mib() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                fd = os.open("/tmp/big", os.O_WRONLY | os.O_CREAT, 0o600)
                chunk = b"x" * (1 << 20)
                try:
                    for _ in range(60):
                        os.write(fd, chunk)
                except OSError as e:
                    return {"errno": e.errno, "size": os.fstat(fd).st_size}
                return {"size": os.fstat(fd).st_size}
        "#))
        .await;
    assert_result(&job, &json!({"errno": EFBIG, "size": 32 << 20}));
}

#[tokio::test]
async fn tmp_holds_at_most_4095_files() {
    let sandbox = sandbox().await;
    // 4096 inodes, one of them /tmp itself: millions of empty files would cost kernel memory.
    let job = sandbox
        .contain(&py(r#"
            def main():
                count = 0
                try:
                    while count < 100000:
                        open(f"/tmp/f{count}", "w").close()
                        count += 1
                except OSError as e:
                    return {"errno": e.errno, "files": count}
                return {"files": count}
        "#))
        .await;
    assert_result(&job, &json!({"errno": ENOSPC, "files": 4095}));
}

#[tokio::test]
async fn files_written_to_tmp_cannot_be_executed() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r##"
            import os
            import subprocess
            import sys

            def main():
                path = "/tmp/tool"
                with open(path, "w") as f:
                    f.write(f"#!{sys.executable}\nprint('ran')\n")
                os.chmod(path, 0o755)
                try:
                    subprocess.run([path], check=False)
                    return {"ran": True}
                except OSError as e:
                    return {"errno": e.errno}
        "##))
        .await;
    assert_result(&job, &json!({ "errno": EACCES }));
}

#[tokio::test]
async fn device_nodes_cannot_be_created() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os
            import stat

            def main():
                try:
                    os.mknod("/tmp/mem", stat.S_IFCHR | 0o666, os.makedev(1, 1))
                    return {"created": True}
                except OSError as e:
                    return {"errno": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({ "errno": EPERM }));
}
