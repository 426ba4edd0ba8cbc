//! The container files against the binaries: `docker-compose.yml` and the two Dockerfiles may
//! only set settings the binaries accept, copy files that exist, and build the binary they
//! run. (No container engine is needed; the files are read, not built.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::app::repo_root;
use crate::readme::help_settings;

/// `docker-compose.yml` as JSON, parsed by PyYAML from the pinned test tools (`make devtools`).
fn compose_file() -> Value {
    let runtime = std::env::var("RUNTIME_DIR").unwrap_or_else(|_| "/opt/runbox".into());
    let python = PathBuf::from(runtime).join("devtools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make devtools`",
        python.display()
    );
    let output = std::process::Command::new(&python)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(repo_root().join("docker-compose.yml"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "docker-compose.yml is not valid YAML: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from python")
}

/// What a Dockerfile sets with `ENV`, copies from the build context with `COPY`, and builds
/// with `cargo build`.
struct Dockerfile {
    env: BTreeSet<String>,
    copied: Vec<String>,
    cargo_build: String,
}

fn dockerfile(path: &Path) -> Dockerfile {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    // Instructions continue over lines ending in a backslash.
    let joined = text.replace("\\\n", " ");
    let mut env = BTreeSet::new();
    let mut copied = Vec::new();
    let mut cargo_build = String::new();
    for line in joined.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENV ") {
            env.extend(
                rest.split_whitespace()
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(name, _)| name.to_owned()),
            );
        } else if let Some(rest) = line.strip_prefix("COPY ") {
            if !rest.starts_with("--from") {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                copied.extend(parts[..parts.len() - 1].iter().map(|s| (*s).to_owned()));
            }
        } else if line.contains("cargo build") {
            cargo_build = line.to_owned();
        }
    }
    Dockerfile {
        env,
        copied,
        cargo_build,
    }
}

#[test]
fn compose_and_dockerfiles_use_only_real_settings_and_files() {
    let compose = compose_file();
    let services = compose["services"].as_object().expect("services");
    for binary in ["api", "worker"] {
        let service = &services[binary];
        let accepted = help_settings(binary);
        let file = service["build"]["dockerfile"]
            .as_str()
            .unwrap_or_else(|| panic!("service {binary} builds from a Dockerfile"));
        assert_eq!(file, format!("Dockerfile.{binary}"));
        let image = dockerfile(&repo_root().join(file));

        let environment = service["environment"]
            .as_object()
            .unwrap_or_else(|| panic!("service {binary} has an environment map"));
        for name in environment.keys().chain(image.env.iter()) {
            assert!(
                accepted.contains_key(name),
                "{binary} does not read {name}, set by docker-compose.yml or {file}"
            );
        }
        for source in &image.copied {
            let path = repo_root().join(source.trim_end_matches('/'));
            assert!(
                path.exists(),
                "{file} copies {source}, which does not exist"
            );
        }
        assert!(
            image.cargo_build.contains("--locked")
                && image.cargo_build.contains(&format!("-p {binary}")),
            "{file} builds the {binary} binary from the lock file: {}",
            image.cargo_build
        );
    }
    assert_eq!(
        build_stage(&repo_root().join("Dockerfile.api")),
        build_stage(&repo_root().join("Dockerfile.worker")),
        "both images share one build stage, so the workspace compiles once for both"
    );
    let worker_url = &services["worker"]["environment"]["DATABASE_URL"];
    assert_eq!(
        worker_url, &services["api"]["environment"]["DATABASE_URL"],
        "the API and the workers share one database"
    );
    assert!(
        worker_url
            .as_str()
            .is_some_and(|url| url.starts_with("postgres://")),
        "containers on several hosts share work through Postgres"
    );
}

/// The instructions of the stage of a Dockerfile that compiles the workspace: from `FROM rust`
/// to the next `FROM`.
fn build_stage(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let start = text.find("FROM rust").expect("a rust build stage");
    let rest = &text[start..];
    let end = rest[1..].find("\nFROM ").map_or(rest.len(), |i| i + 1);
    rest[..end]
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn workers_run_with_three_capabilities_and_the_shipped_seccomp_profile() {
    let compose = compose_file();
    let worker = &compose["services"]["worker"];
    assert!(
        worker.get("privileged").is_none_or(|p| p == false),
        "workers are not privileged"
    );
    assert_eq!(worker["cap_drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        worker["cap_add"],
        serde_json::json!(["SYS_ADMIN", "SETUID", "SETGID"])
    );
    let options: Vec<&str> = worker["security_opt"]
        .as_array()
        .expect("security_opt")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let profile = options
        .iter()
        .find_map(|o| o.strip_prefix("seccomp="))
        .expect("a seccomp profile");
    let profile: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join(profile)).expect("the profile exists"),
    )
    .expect("the profile is JSON");
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(
        worker["cgroup"], "private",
        "jobs' cgroups nest in the container's own"
    );
}

#[test]
fn the_api_image_runs_as_an_unprivileged_user() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile.api")).expect("read");
    let user = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("a USER line");
    assert!(!["root", "0"].contains(&user.trim()), "USER {user}");
}
