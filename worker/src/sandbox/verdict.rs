//! Turning what a sandbox run left behind (exit status, nsjail's log, the harness's record,
//! cgroup counters, the worker's clock) into the job's outcome. Pure, so every rule is tested.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;
use serde_json::value::RawValue;
use shared::job::{ErrorKind, Failure, SourcePosition};

/// How the jailed process ended, as nsjail logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailExit {
    Exited(i32),
    Signaled(i32),
    /// nsjail never reported the process ending: it failed before or while starting it.
    Unknown,
}

/// Reads the jailed process's fate from nsjail's log (its own exit code cannot tell a script's
/// `os._exit(137)` from a SIGKILL).
#[must_use]
pub fn parse_jail_exit(log: &str) -> JailExit {
    for line in log.lines().rev() {
        if let Some(rest) = line.split("exited with status: ").nth(1) {
            if let Some(code) = leading_number(rest) {
                return JailExit::Exited(code);
            }
        }
        if let Some(rest) = line.split("terminated with signal: ").nth(1) {
            if let Some(number) = rest.split('(').nth(1).and_then(leading_number) {
                return JailExit::Signaled(number);
            }
        }
    }
    JailExit::Unknown
}

fn leading_number(text: &str) -> Option<i32> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The name of a signal number, e.g. `SIGKILL`.
#[must_use]
pub fn signal_name(number: i32) -> String {
    Signal::try_from(number).map_or_else(|_| format!("signal {number}"), |s| s.as_str().to_owned())
}

/// The harness's result channel, as read by the worker.
#[derive(Debug)]
pub enum Record {
    Missing,
    Written(Vec<u8>),
    TooLarge,
}

/// Everything known about a finished sandbox run.
#[derive(Debug)]
pub struct RunReport {
    pub jail: JailExit,
    pub timed_out: bool,
    pub timeout: Duration,
    pub memory_mb: u32,
    pub memory_limit_hit: bool,
    pub record: Record,
    pub result_limit_bytes: usize,
}

#[derive(Deserialize)]
struct HarnessRecord<'a> {
    ok: bool,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    kind: Option<String>,
    message: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    code: Option<i32>,
}

/// The verdict on a run: the result or the failure, plus the exit code and signal to report.
#[derive(Debug)]
pub struct Verdict {
    pub result: Result<Box<RawValue>, Failure>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
}

/// The failures the harness reports. The script runs in the harness's process and can write
/// to the result pipe too; a record naming any other kind is not the harness's and is ignored,
/// so a script cannot claim a verdict only the worker gives (memory limit, timeout, a lost
/// worker or a broken sandbox).
const HARNESS_KINDS: [ErrorKind; 5] = [
    ErrorKind::SyntaxError,
    ErrorKind::MissingMain,
    ErrorKind::Exception,
    ErrorKind::ResultNotJson,
    ErrorKind::Exited,
];

fn fail(kind: ErrorKind, message: impl Into<String>) -> Result<Box<RawValue>, Failure> {
    Err(Failure {
        kind,
        message: message.into(),
        position: None,
    })
}

/// Decides how a run ended. Order matters: the worker's clock and the cgroup's counters are
/// trusted over exit codes, which a script can fake.
#[must_use]
pub fn judge(report: &RunReport) -> Verdict {
    let (exit_code, signal) = match report.jail {
        JailExit::Exited(code) => (Some(code), None),
        JailExit::Signaled(number) => (None, Some(signal_name(number))),
        JailExit::Unknown => (None, None),
    };
    let verdict = |result| Verdict {
        result,
        exit_code,
        signal: signal.clone(),
    };
    let seconds = report.timeout.as_secs_f64();

    if report.timed_out {
        return verdict(fail(
            ErrorKind::Timeout,
            format!("script exceeded its time limit of {seconds} s and was killed"),
        ));
    }
    if let (JailExit::Exited(0), Record::Written(bytes)) = (report.jail, &report.record) {
        if let Some(verdict_from_record) = from_record(bytes, report.result_limit_bytes) {
            return Verdict {
                exit_code: match &verdict_from_record {
                    Err(Failure {
                        kind: ErrorKind::Exited,
                        ..
                    }) => exit_code_of(bytes),
                    _ => exit_code,
                },
                result: verdict_from_record,
                signal,
            };
        }
    }
    if matches!(report.record, Record::TooLarge) {
        return verdict(fail(
            ErrorKind::OutputLimit,
            format!(
                "main() returned a value whose JSON is larger than the {} byte limit",
                report.result_limit_bytes
            ),
        ));
    }
    if report.memory_limit_hit && !matches!(report.jail, JailExit::Exited(0)) {
        return verdict(fail(
            ErrorKind::MemoryLimit,
            format!(
                "script exceeded its memory limit of {} MiB and was killed",
                report.memory_mb
            ),
        ));
    }
    match report.jail {
        JailExit::Signaled(number) if number == Signal::SIGXCPU as i32 => verdict(fail(
            ErrorKind::Timeout,
            format!(
                "script exceeded its CPU time limit of {} s and was killed",
                seconds.ceil()
            ),
        )),
        JailExit::Signaled(number) => verdict(fail(
            ErrorKind::Killed,
            format!("script was killed by {}", signal_name(number)),
        )),
        JailExit::Exited(code) => verdict(fail(
            ErrorKind::Exited,
            format!(
                "script ended the interpreter with exit code {code} (sys.exit or os._exit) \
                 before main() returned"
            ),
        )),
        JailExit::Unknown => verdict(fail(
            ErrorKind::SandboxError,
            "the sandbox failed to start the script; the worker logged the details",
        )),
    }
}

fn exit_code_of(bytes: &[u8]) -> Option<i32> {
    serde_json::from_slice::<HarnessRecord<'_>>(bytes)
        .ok()
        .and_then(|r| r.code)
}

/// Whether `record` is a whole one of the harness's, which it writes as its last act.
#[must_use]
pub fn is_complete(record: &Record, result_limit: usize) -> bool {
    matches!(record, Record::Written(bytes) if from_record(bytes, result_limit).is_some())
}

/// `None` when the record is not one the harness writes (then exit status decides).
fn from_record(bytes: &[u8], result_limit: usize) -> Option<Result<Box<RawValue>, Failure>> {
    let record: HarnessRecord<'_> = serde_json::from_slice(bytes).ok()?;
    if record.ok {
        // serde reads a JSON `null` into `None`; the harness always writes `result` on success.
        let null = RawValue::from_string("null".to_owned()).ok()?;
        let raw = record.result.map_or(null, RawValue::to_owned);
        if raw.get().len() > result_limit {
            return Some(fail(
                ErrorKind::OutputLimit,
                format!("main() returned a value whose JSON is larger than the {result_limit} byte limit"),
            ));
        }
        return Some(Ok(raw));
    }
    let kind = ErrorKind::parse(record.kind.as_deref()?)?;
    if !HARNESS_KINDS.contains(&kind) {
        return None;
    }
    let position = match (record.line, record.column) {
        (Some(line), Some(column)) => Some(SourcePosition { line, column }),
        _ => None,
    };
    Some(Err(Failure {
        kind,
        message: record.message.unwrap_or_default(),
        position,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(jail: JailExit, record: Record) -> RunReport {
        RunReport {
            jail,
            timed_out: false,
            timeout: Duration::from_secs(10),
            memory_mb: 256,
            memory_limit_hit: false,
            record,
            result_limit_bytes: 1 << 20,
        }
    }

    fn written(text: &str) -> Record {
        Record::Written(text.as_bytes().to_vec())
    }

    fn kind(verdict: &Verdict) -> Option<ErrorKind> {
        verdict.result.as_ref().err().map(|f| f.kind)
    }

    #[test]
    fn nsjail_log_tells_exit_from_signal() {
        let exited = "[I][..] pid=12 ([STANDALONE MODE]) exited with status: 137, (PIDs left: 0)";
        assert_eq!(parse_jail_exit(exited), JailExit::Exited(137));
        let signaled = "[I][..] pid=12 ([STANDALONE MODE]) terminated with signal: SIGSEGV (11), (PIDs left: 0)";
        assert_eq!(parse_jail_exit(signaled), JailExit::Signaled(11));
        assert_eq!(
            parse_jail_exit("[F][..] Couldn't launch"),
            JailExit::Unknown
        );
    }

    #[test]
    fn a_clean_record_is_the_result_verbatim() {
        let verdict = judge(&report(
            JailExit::Exited(0),
            written(r#"{"ok": true, "result": {"big": 1180591620717411303424}}"#),
        ));
        let result = verdict.result.expect("success");
        assert_eq!(result.get(), r#"{"big": 1180591620717411303424}"#);
    }

    #[test]
    fn a_none_result_is_json_null() {
        let verdict = judge(&report(
            JailExit::Exited(0),
            written(r#"{"ok": true, "result": null}"#),
        ));
        assert_eq!(verdict.result.expect("success").get(), "null");
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let verdict = judge(&report(
            JailExit::Exited(0),
            written(
                r#"{"ok": false, "kind": "syntax_error", "message": "SyntaxError: x (line 2, column 3)", "line": 2, "column": 3}"#,
            ),
        ));
        let failure = verdict.result.expect_err("failure");
        assert_eq!(failure.kind, ErrorKind::SyntaxError);
        assert_eq!(
            failure.position,
            Some(SourcePosition { line: 2, column: 3 })
        );
    }

    #[test]
    fn sys_exit_reports_the_exit_code() {
        let verdict = judge(&report(
            JailExit::Exited(0),
            written(r#"{"ok": false, "kind": "exited", "message": "m", "code": 3}"#),
        ));
        assert_eq!(kind(&verdict), Some(ErrorKind::Exited));
        assert_eq!(verdict.exit_code, Some(3));
    }

    #[test]
    fn exiting_without_a_record_is_not_a_success() {
        let verdict = judge(&report(JailExit::Exited(0), Record::Missing));
        assert_eq!(kind(&verdict), Some(ErrorKind::Exited));
        let verdict = judge(&report(JailExit::Exited(3), Record::Missing));
        assert_eq!(kind(&verdict), Some(ErrorKind::Exited));
        assert_eq!(verdict.exit_code, Some(3));
    }

    #[test]
    fn a_record_from_a_process_that_then_failed_is_ignored() {
        let verdict = judge(&report(
            JailExit::Exited(1),
            written(r#"{"ok": true, "result": 1}"#),
        ));
        assert_eq!(kind(&verdict), Some(ErrorKind::Exited));
    }

    #[test]
    fn the_worker_clock_decides_timeouts() {
        let mut timed_out = report(JailExit::Signaled(9), Record::Missing);
        timed_out.timed_out = true;
        timed_out.memory_limit_hit = true;
        assert_eq!(kind(&judge(&timed_out)), Some(ErrorKind::Timeout));
    }

    #[test]
    fn sigkill_is_memory_limit_only_when_the_cgroup_says_so() {
        let mut oom = report(JailExit::Signaled(9), Record::Missing);
        oom.memory_limit_hit = true;
        let verdict = judge(&oom);
        assert_eq!(kind(&verdict), Some(ErrorKind::MemoryLimit));
        assert!(verdict.result.expect_err("oom").message.contains("256 MiB"));

        let plain = judge(&report(JailExit::Signaled(9), Record::Missing));
        assert_eq!(kind(&plain), Some(ErrorKind::Killed));
        assert_eq!(plain.signal.as_deref(), Some("SIGKILL"));
    }

    #[test]
    fn cpu_limit_signal_is_a_timeout_naming_the_cpu_limit() {
        let mut cpu = report(JailExit::Signaled(24), Record::Missing);
        cpu.timeout = Duration::from_millis(2500);
        let verdict = judge(&cpu);
        assert_eq!(kind(&verdict), Some(ErrorKind::Timeout));
        let message = verdict.result.expect_err("timeout").message;
        assert!(message.contains("CPU time limit of 3 s"), "{message}");
        assert_eq!(verdict.signal.as_deref(), Some("SIGXCPU"));
    }

    #[test]
    fn a_record_cannot_claim_a_verdict_only_the_worker_gives() {
        for forged in [
            "memory_limit",
            "timeout",
            "sandbox_error",
            "worker_lost",
            "killed",
        ] {
            let record = format!(r#"{{"ok": false, "kind": "{forged}", "message": "m"}}"#);
            let verdict = judge(&report(JailExit::Exited(0), written(&record)));
            assert_eq!(kind(&verdict), Some(ErrorKind::Exited), "{forged}");
        }
    }

    #[test]
    fn oversized_results_are_an_output_limit() {
        assert_eq!(
            kind(&judge(&report(JailExit::Exited(0), Record::TooLarge))),
            Some(ErrorKind::OutputLimit)
        );
        let mut small_limit = report(
            JailExit::Exited(0),
            written(r#"{"ok": true, "result": "0123456789"}"#),
        );
        small_limit.result_limit_bytes = 4;
        assert_eq!(kind(&judge(&small_limit)), Some(ErrorKind::OutputLimit));
    }

    #[test]
    fn nsjail_failing_to_start_is_a_sandbox_error() {
        let verdict = judge(&report(JailExit::Unknown, Record::Missing));
        assert_eq!(kind(&verdict), Some(ErrorKind::SandboxError));
    }
}
