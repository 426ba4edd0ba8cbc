//! Escape attempts: how jobs end.

use super::*;

#[tokio::test]
async fn sys_exit_zero_is_not_a_success() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import sys\n\ndef main():\n    sys.exit(0)\n")
        .await;
    assert_failure(&job, "exited", "sys.exit(0)");
    assert_eq!(job["exit_code"], 0, "{job}");
}

#[tokio::test]
async fn os_exit_three_reports_exit_code_three() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import os\n\ndef main():\n    os._exit(3)\n")
        .await;
    assert_failure(&job, "exited", "exit code 3");
    assert_eq!(job["exit_code"], 3, "{job}");
}

#[tokio::test]
async fn a_bare_raise_system_exit_is_not_a_success() {
    let sandbox = sandbox().await;
    let job = sandbox.contain("def main():\n    raise SystemExit\n").await;
    assert_failure(&job, "exited", "sys.exit(None)");
    assert_eq!(job["exit_code"], 0, "{job}");
}

#[tokio::test]
async fn a_forged_result_record_cannot_claim_a_worker_verdict() {
    let sandbox = sandbox().await;
    // The result pipe is open in the script's process; it can write a record, but not one
    // that blames the sandbox or the memory limit.
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                os.write(3, b'{"ok": false, "kind": "sandbox_error", "message": "forged"}\n')
                os._exit(0)
        "#))
        .await;
    assert_failure(&job, "exited", "exit code 0");
}

#[tokio::test]
async fn a_segfault_is_reported_as_killed_by_sigsegv() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import ctypes\n\ndef main():\n    return ctypes.string_at(0)\n")
        .await;
    assert_failure(&job, "killed", "SIGSEGV");
    assert_eq!(job["signal"], "SIGSEGV", "{job}");
}

#[tokio::test]
async fn every_standard_library_extension_numpy_and_pandas_import_in_the_jail() {
    let sandbox = sandbox().await;
    // The policy binds only the libraries these need; a missing one fails an import here.
    let job = sandbox
        .contain(&py(r#"
            import glob
            import importlib
            import os

            def main():
                failed = {}
                modules = [os.path.basename(p).split(".")[0]
                           for p in glob.glob("/usr/lib/python3.11/lib-dynload/*.so")]
                for name in modules + ["numpy", "pandas", "zoneinfo", "dateutil", "pytz"]:
                    try:
                        importlib.import_module(name)
                    except Exception as e:
                        failed[name] = repr(e)
                return {"imported": len(modules) > 40, "failed": failed}
        "#))
        .await;
    assert_result(&job, &json!({"imported": true, "failed": {}}));
}

/// Runs raw x86 machine code (`code`, ending in `ret`) and returns what it left in rax.
const MACHINE_CODE: &str = r#"
import ctypes
import mmap

def run(code):
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return ctypes.CFUNCTYPE(ctypes.c_long)(address)()
"#;

#[tokio::test]
async fn i386_system_calls_kill_the_job() {
    let sandbox = sandbox().await;
    // unshare(CLONE_NEWUSER) by its i386 number (310) through int 0x80, where the x86-64
    // numbers the filter matches would not apply: the filter kills any other architecture.
    let job = sandbox
        .contain(&format!(
            "{}{}",
            py(MACHINE_CODE),
            py(r#"
                def main():
                    # push rbx; mov eax, 310; mov ebx, 0x10000000; int 0x80; pop rbx; ret
                    return run(bytes.fromhex("53" "b836010000" "bb00000010" "cd80" "5b" "c3"))
            "#)
        ))
        .await;
    assert_failure(&job, "killed", "SIGSYS");
    assert_eq!(job["signal"], "SIGSYS", "{job}");
}

#[tokio::test]
async fn x32_system_calls_do_not_exist() {
    let sandbox = sandbox().await;
    // unshare(CLONE_NEWUSER) by its x32 number (bit 30 | 272): the filter cannot match x32
    // numbers, so the worker only runs where the kernel refuses them (its self-test checks).
    let job = sandbox
        .contain(&format!(
            "{}{}",
            py(MACHINE_CODE),
            py(r#"
                def main():
                    # mov eax, 0x40000110; mov edi, 0x10000000; syscall; ret
                    return run(bytes.fromhex("b810010040" "bf00000010" "0f05" "c3"))
            "#)
        ))
        .await;
    assert_result(&job, &json!(-ENOSYS));
}
