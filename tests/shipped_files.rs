//! What ships next to the binary: `strata.example.toml` names every field the code reads,
//! with the code's default, and the `docker/` files name the binary, flags, variables, ports,
//! endpoints and config keys strata has. No Docker engine here: the images and the
//! Kubernetes manifest are not run, only checked against the binary they would run.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use support::{free_port, http_get, wait_for_port, wait_until};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Sections read once (not arrays of tables), as `src/config/` reads them.
const SECTIONS: [&str; 6] = ["server", "upstream", "limits", "log", "postgres", "breaker"];

/// A field read in `src/config/`: its section, name, and default (`None` for an optional one).
type Field = (String, String, Option<String>);

/// Every field `src/config/*.rs` reads from a single-table section, found the way the code
/// reads it: `root.section("S")`, then `s.get("f", default`, `s.opt("f"`,
/// `millis`/`positive`/`positive_millis(&mut s, "f", default`.
fn fields_the_code_reads() -> Vec<Field> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("{ROOT}/src/config")).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let consts: BTreeMap<&str, &str> = source
            .lines()
            .filter_map(|l| l.trim().strip_prefix("const "))
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                Some((name.trim(), rest.split_once('=')?.1.trim().trim_end_matches(';')))
            })
            .collect();
        let mut section: Option<String> = None;
        for line in source.lines() {
            if let Some(rest) = line.split_once("root.section(\"").map(|(_, r)| r) {
                section = Some(rest.split('"').next().unwrap().to_string());
                continue;
            }
            if line.contains("root.tables(") || line.trim_start().starts_with("fn ") {
                section = None;
            }
            let Some(section) = section.as_ref().filter(|s| SECTIONS.contains(&s.as_str())) else { continue };
            for (call, optional) in [
                ("s.get(\"", false),
                ("s.opt(\"", true),
                ("millis(&mut s, \"", false),
                ("positive(&mut s, \"", false),
            ] {
                let Some((_, rest)) = line.split_once(call) else { continue };
                let (name, rest) = rest.split_once('"').unwrap();
                let default = (!optional).then(|| {
                    let text = rest.trim_start_matches(", ").split(", errors").next().unwrap().trim();
                    consts.get(text).copied().unwrap_or(text).to_string()
                });
                out.push((section.clone(), name.to_string(), default));
                break;
            }
        }
    }
    out
}

/// A Rust default expression (`512 * 1024 * 1024`, `0u64`, `"text".to_string()`, `0.5`) as TOML.
fn as_toml(expr: &str) -> toml::Value {
    if let Some(s) = expr.strip_suffix(".to_string()") {
        return toml::Value::String(s.trim_matches('"').to_string());
    }
    let digits = expr.replace('_', "").replace("u64", "");
    if digits.contains('.') {
        return toml::Value::Float(digits.parse().unwrap_or_else(|_| panic!("default {expr}")));
    }
    let product =
        digits.split('*').map(|f| f.trim().parse::<i64>().unwrap_or_else(|_| panic!("default {expr}")));
    toml::Value::Integer(product.product())
}

#[test]
fn the_example_config_names_every_field_with_its_default() {
    let text = std::fs::read_to_string(format!("{ROOT}/strata.example.toml")).unwrap();
    let example: toml::Table = text.parse().expect("strata.example.toml is TOML");
    let fields = fields_the_code_reads();
    for section in SECTIONS {
        assert!(fields.iter().any(|(s, _, _)| s == section), "found no field of [{section}] in src/config/");
    }
    assert!(fields.len() >= 33, "found only {} fields in src/config/: {fields:?}", fields.len());
    let mut missing = Vec::new();
    for (section, name, default) in &fields {
        let value = example.get(section).and_then(|s| s.get(name));
        match (value, default) {
            (Some(value), Some(default)) => {
                assert_eq!(
                    value,
                    &as_toml(default),
                    "{section}.{name}: the example shows {value}, the code defaults to {default}"
                );
            }
            // Optional fields (no default): shown set or commented out, under their section.
            (Some(_), None) => {}
            (None, _) => {
                let start = text
                    .find(&format!("\n[{section}]\n"))
                    .unwrap_or_else(|| panic!("no [{section}] in the example"));
                let body = &text[start + 1..];
                let end = body[1..].find("\n[").map_or(body.len(), |i| i + 1);
                if !body[..end].contains(&format!("# {name} = ")) {
                    missing.push(format!("{section}.{name}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "fields the code reads that strata.example.toml does not show: {missing:?}");
}

fn strata_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The ConfigMap's `strata.toml: |` block of the Kubernetes example, unindented.
fn sidecar_config(yaml: &str) -> String {
    let start = yaml.find("strata.toml: |\n").expect("a strata.toml entry in the ConfigMap")
        + "strata.toml: |\n".len();
    let mut out = String::new();
    for line in yaml[start..].lines() {
        if !line.is_empty() && !line.starts_with("    ") {
            break;
        }
        out.push_str(line.strip_prefix("    ").unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The files exist and name only what the binary has: its flags and variables (`--help`),
/// the config the image ships (the example, checked by `check-config`), the sidecar's
/// config (`check-config`), and with that config and the sidecar's arguments the binary
/// serves the probes' `/healthz` and `/readyz` on the admin port. Images are not built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_files_name_the_binary_flags_ports_and_config_that_exist() {
    let (dockerfile, compose, k8s) =
        (read("docker/Dockerfile"), read("docker/compose.yaml"), read("docker/k8s-sidecar.yaml"));
    let help = String::from_utf8(strata_bin().arg("--help").output().unwrap().stdout).unwrap();
    for flag in ["--config", "--listen", "--admin", "STRATA_UPSTREAM", "STRATA_POSTGRES"] {
        assert!(help.contains(flag), "--help has no {flag}");
    }

    // Dockerfile: the binary is strata, the shipped config is the example, the ports match the CMD.
    assert!(dockerfile.contains("ENTRYPOINT [\"strata\"]"));
    assert!(dockerfile.contains("COPY strata.example.toml /etc/strata/strata.toml"));
    assert!(dockerfile.contains("EXPOSE 6380 9121"));
    assert!(dockerfile.contains(r#"CMD ["--config", "/etc/strata/strata.toml", "--listen", "0.0.0.0:6380", "--admin", "0.0.0.0:9121"]"#));
    let out = strata_bin().args(["check-config", &format!("{ROOT}/strata.example.toml")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // compose: builds this Dockerfile, publishes the CMD's ports, sets variables strata reads.
    assert!(compose.contains("dockerfile: docker/Dockerfile"));
    assert!(compose.contains("\"127.0.0.1:6380:6380\"") && compose.contains("\"127.0.0.1:9121:9121\""));
    assert!(compose.contains("STRATA_UPSTREAM: redis://redis:6379"));
    assert!(compose.contains("9121") && compose.contains("/readyz"));

    // Kubernetes: the sidecar's config is valid, its args are flags strata has, and the
    // probes' port and paths are the admin listener's.
    let config = sidecar_config(&k8s);
    assert!(config.contains("[server]") && config.contains("format = \"json\""), "{config}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(&file, &config).unwrap();
    let out = strata_bin().arg("check-config").arg(&file).output().unwrap();
    assert!(out.status.success(), "the sidecar's strata.toml: {}", String::from_utf8_lossy(&out.stderr));
    for arg in [
        "- --config",
        "- /etc/strata/strata.toml",
        "- --listen",
        "- 127.0.0.1:6380",
        "- --admin",
        "- 0.0.0.0:9121",
    ] {
        assert!(k8s.contains(arg), "k8s args: {arg}");
    }
    assert!(k8s.contains("containerPort: 9121") && k8s.contains("name: admin"));
    assert!(k8s.contains("httpGet: { path: /healthz, port: admin }"));
    assert!(k8s.contains("httpGet: { path: /readyz, port: admin }"));
    assert!(k8s.contains("mountPath: /etc/strata"));

    // Run the binary as the sidecar would (loopback ports instead of 6380/9121).
    let redis = support::RedisServer::start();
    let (port, admin) = (free_port(), free_port());
    let mut child = strata_bin()
        .arg("--config")
        .arg(&file)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--admin", &format!("127.0.0.1:{admin}")])
        .env("STRATA_UPSTREAM", redis.url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(admin);
    let admin_addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    assert_eq!(http_get(admin_addr, "/healthz").await.0, 200);
    wait_until("/readyz answers 200", || async { http_get(admin_addr, "/readyz").await.0 == 200 }).await;
    let _ = child.kill();
    let _ = child.wait();
}
