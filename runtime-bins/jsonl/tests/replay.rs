//! Drives the `lhopt-jsonl` binary through the fixed scenario, over real pipes, and checks every
//! decision bit for bit against the core library; bad lines are interleaved and must change
//! nothing.

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use lhopt_core::{Decision, Hyperparams, TensorReductions};
use lhopt_embed::scenario::{Scenario, reference_decisions_tiny};
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};
use lhopt_jsonl::protocol::Tensor;
use serde::Deserialize;
use serde_json::{Value, json};

struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Process {
    fn start(policy: &Path, scenario: &Scenario) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lhopt-jsonl"))
            .arg("--policy")
            .arg(policy)
            .args(["--total-steps", &scenario.total_steps.to_string()])
            .args(["--decisions", &scenario.decisions.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start lhopt-jsonl");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Process {
            child,
            stdin,
            stdout,
        }
    }

    fn read(&mut self) -> Value {
        let line = self.stdout.next().expect("a reply line").expect("readable");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line}"))
    }

    /// Sends one line and returns its reply.
    fn send(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").expect("write to lhopt-jsonl");
        self.stdin.flush().expect("flush");
        self.read()
    }

    fn finish(mut self) {
        drop(self.stdin);
        let status = self.child.wait().expect("lhopt-jsonl exits");
        assert!(status.success(), "lhopt-jsonl exited with {status}");
    }
}

fn loss_json(x: f32) -> Value {
    match x {
        x if x.is_nan() => json!("NaN"),
        f32::INFINITY => json!("Infinity"),
        f32::NEG_INFINITY => json!("-Infinity"),
        x => json!(x),
    }
}

fn tensor_json(r: &TensorReductions) -> Value {
    serde_json::to_value(Tensor::from(r)).expect("a tensor's reductions encode")
}

fn assert_error(reply: &Value, containing: &str) {
    assert_eq!(
        reply["type"], "error",
        "expected an error reply, got {reply}"
    );
    let message = reply["message"].as_str().expect("message");
    assert!(
        message.contains(containing),
        "error message {message:?} should mention {containing:?}"
    );
}

#[derive(Deserialize)]
struct DecisionReply {
    hyper: Hyperparams,
    restart: Value,
}

fn restart_json(d: &Decision) -> Value {
    use lhopt_core::Restart::*;
    match d.restart {
        None => json!({"op": "none"}),
        Save(r) => json!({"op": "save", "register": r}),
        Load(r) => json!({"op": "load", "register": r}),
        Swap(r) => json!({"op": "swap", "register": r}),
    }
}

/// Runs the scenario; with `noise`, sends a batch of bad lines before every decision's
/// `decide` and after every 10th step, each of which must be rejected without effect.
fn run(noise: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("untrained.lhp");
    let bytes = tiny_policy_bytes(TEST_SEED);
    std::fs::write(&policy, &bytes).expect("write policy");
    let scenario = Scenario::DEFAULT;
    let expected: Vec<Decision> = reference_decisions_tiny(&bytes, &scenario)
        .expect("reference run")
        .iter()
        .map(|r| r.decision)
        .collect();

    let mut p = Process::start(&policy, &scenario);
    let ready = p.read();
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["preset"], json!([32, 32, 32]));
    let mut want = ready["want_reductions"].as_bool().expect("want_reductions");
    let mut decisions = Vec::new();
    for t in 0..scenario.total_steps {
        let input = scenario.step(t);
        let mut step = json!({"type": "step", "step": t, "loss": loss_json(input.loss)});
        if want {
            step["reductions"] = json!({
                "clipped": input.clipped,
                "tensors": input.reductions.iter().map(tensor_json).collect::<Vec<_>>(),
            });
        }
        if noise && t % 10 == 0 {
            assert_error(&p.send("{\"type\":\"step\""), "not valid JSON");
            assert_error(
                &p.send(&format!("{{\"type\":\"step\",\"step\":{t},\"loss\":NaN}}")),
                "\"NaN\"",
            );
            assert_error(
                &p.send(&json!({"type": "stop"}).to_string()),
                "unknown variant",
            );
            assert_error(
                &p.send(&json!({"type": "step", "step": t + 1, "loss": 1.0}).to_string()),
                &format!("expected step {t}"),
            );
            assert_error(
                &p.send(
                    &json!({"type": "decide", "param_norm": 1.0, "displacement": 1.0}).to_string(),
                ),
                "no decision is due",
            );
            let mut overflow = step.clone();
            overflow["loss"] = json!(1e39);
            assert_error(&p.send(&overflow.to_string()), "overflows");
            if want {
                let mut bad = step.clone();
                bad["reductions"]["tensors"][0]["grad_norm"] = json!(-1e300);
                assert_error(&p.send(&bad.to_string()), "overflows a 32-bit float");
                // One fault at a time: with both, the first field parsed names the error.
                bad["reductions"]["tensors"][0]["grad_norm"] = json!(1.0);
                bad["reductions"]["tensors"][0]["numel"] = json!(-3);
                assert_error(&p.send(&bad.to_string()), "invalid value");
            }
        }
        let ack = p.send(&step.to_string());
        assert_eq!(ack["type"], "ack", "step {t}: {ack}");
        assert_eq!(ack["step"], t);
        want = ack["want_reductions"].as_bool().expect("want_reductions");
        if ack["status"] != "decision_due" {
            continue;
        }
        if noise {
            assert_error(
                &p.send(&json!({"type": "step", "step": t + 1, "loss": 1.0}).to_string()),
                "a decision is due",
            );
        }
        let k = decisions.len() as u32 + 1;
        let inputs = scenario.decision_inputs(k);
        let decide = json!({
            "type": "decide", "param_norm": inputs.param_norm,
            "displacement": inputs.displacement, "eval_loss": loss_json(inputs.eval_loss),
        });
        let reply = p.send(&decide.to_string());
        assert_eq!(reply["type"], "decision", "{reply}");
        assert_eq!(reply["decision"], k);
        assert_eq!(reply["after_step"], t);
        want = reply["want_reductions"].as_bool().expect("want_reductions");
        decisions.push(reply);
    }
    assert_error(
        &p.send(&json!({"type": "step", "step": scenario.total_steps, "loss": 1.0}).to_string()),
        "finished",
    );

    assert_eq!(decisions.len(), expected.len(), "number of decisions");
    for (k, (got, want)) in decisions.iter().zip(&expected).enumerate() {
        let parsed: DecisionReply = serde_json::from_value(got.clone()).expect("decision fields");
        assert_eq!(
            parsed.hyper.to_array().map(f32::to_bits),
            want.hyper.to_array().map(f32::to_bits),
            "decision {}: hyperparameters differ from the core library's",
            k + 1
        );
        assert_eq!(
            parsed.restart,
            restart_json(want),
            "decision {}: restart",
            k + 1
        );
    }
    p.finish();
}

#[test]
fn decisions_match_the_core_library_bit_for_bit() {
    run(false);
}

#[test]
fn rejected_lines_leave_no_trace() {
    run(true);
}

#[test]
fn a_bad_policy_file_is_reported_on_stdout_and_exit_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("cut.lhp");
    let bytes = tiny_policy_bytes(TEST_SEED);
    std::fs::write(&policy, &bytes[..bytes.len() / 2]).expect("write policy");
    let out = Command::new(env!("CARGO_BIN_EXE_lhopt-jsonl"))
        .arg("--policy")
        .arg(&policy)
        .args(["--total-steps", "10", "--decisions", "2"])
        .stdin(Stdio::null())
        .output()
        .expect("run lhopt-jsonl");
    assert_eq!(out.status.code(), Some(2));
    let reply: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_error(&reply, "cannot load policy file");
}
