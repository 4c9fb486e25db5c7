//! Input that a careless or diverging client sends: bytes that are not UTF-8, endless lines,
//! huge values, a policy path that never ends, non-finite statistics; and the replies that tell
//! a client when reductions are due and when the run is over.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use lhopt_core::{Hyperparams, Mode, RunConfig, TensorReductions};
use lhopt_embed::steer::load_any;
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};
use lhopt_jsonl::protocol::Reply;
use lhopt_jsonl::session::Session;
use serde_json::{Value, json};

const DEFAULT_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/default.lhp");

/// Runs the binary on `input` and returns its reply lines and exit status.
fn run(args: &[&str], input: &[u8]) -> (Vec<Value>, Output) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lhopt-jsonl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lhopt-jsonl");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Written from another thread: the replies may fill the pipe before the input is all in.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("lhopt-jsonl exits");
    writer.join().expect("writer");
    let replies = String::from_utf8(out.stdout.clone())
        .expect("replies are UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each reply is one JSON line"))
        .collect();
    (replies, out)
}

const ARGS: [&str; 6] = [
    "--policy",
    DEFAULT_POLICY,
    "--total-steps",
    "10",
    "--decisions",
    "1",
];

#[test]
fn a_line_that_is_not_utf8_is_answered_with_an_error_and_the_run_goes_on() {
    let input = b"{\"type\":\"step\",\"step\":0,\"loss\":1}\n\x80\n{\"type\":\"step\",\"step\":1,\"loss\":1}\n";
    let (replies, out) = run(&ARGS, input);
    assert!(out.status.success(), "{:?}", out);
    let kinds: Vec<&str> = replies
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ready", "ack", "error", "ack"]);
    assert_eq!(replies[2]["line"], 2);
    assert!(
        replies[2]["message"]
            .as_str()
            .unwrap()
            .contains("not UTF-8")
    );
    assert_eq!(replies[3]["step"], 1);
}

#[test]
fn long_lines_and_huge_values_get_short_errors() {
    // A line over the limit is skipped whole; a value of 1 MB inside the limit is not echoed.
    let long = format!(
        "{{\"type\":\"step\",\"step\":0,\"loss\":\"{}\"}}\n",
        "x".repeat(5000)
    );
    let huge = format!(
        "{{\"type\":\"step\",\"step\":0,\"loss\":\"{}\"}}\n",
        "y".repeat(1 << 20)
    );
    let input = format!("{long}{huge}{{\"type\":\"step\",\"step\":0,\"loss\":1}}\n");
    let mut args = ARGS.to_vec();
    args.extend(["--max-line-bytes", "2000000"]);
    let (replies, out) = run(&args, input.as_bytes());
    assert!(out.status.success());
    assert_eq!(replies.len(), 4);
    assert_eq!(replies[3]["type"], "ack");
    let line = serde_json::to_string(&replies[2]).unwrap();
    assert!(line.len() < 1024, "a {}-byte error line", line.len());
    assert!(line.contains("1048576 bytes"), "{line}");

    args.truncate(ARGS.len());
    args.extend(["--max-line-bytes", "1000"]);
    let (replies, out) = run(&args, input.as_bytes());
    assert!(out.status.success());
    let kinds: Vec<&str> = replies
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ready", "error", "error", "ack"]);
    let message = replies[1]["message"].as_str().unwrap();
    assert!(
        message.contains("5034 bytes long, more than the limit of 1000"),
        "{message}"
    );
}

#[test]
fn a_policy_path_without_end_is_refused() {
    let (replies, out) = run(
        &[
            "--policy",
            "/dev/zero",
            "--total-steps",
            "10",
            "--decisions",
            "1",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let message = replies[0]["message"].as_str().unwrap();
    assert!(message.contains("longer than"), "{message}");
}

#[test]
fn non_finite_statistics_are_accepted_as_the_core_accepts_them() {
    // One step with reductions whose values diverged, sent as the protocol spells them.
    let mut tensor = serde_json::to_value(lhopt_jsonl::protocol::Tensor::from(&TensorReductions {
        numel: 10,
        grad_norm: f32::INFINITY,
        mhat_norm: f32::NAN,
        ..TensorReductions::default()
    }))
    .unwrap();
    assert_eq!(
        (&tensor["grad_norm"], &tensor["mhat_norm"]),
        (&json!("Infinity"), &json!("NaN"))
    );
    tensor["param_norm"] = Value::Null;
    let step = json!({"type": "step", "step": 0, "loss": "NaN",
        "reductions": {"clipped": true, "tensors": [tensor]}});
    let decide = json!({"type": "decide", "param_norm": "NaN", "displacement": "Infinity", "eval_loss": null});
    let mut input = format!("{step}\n");
    for t in 1..10 {
        input.push_str(&format!(
            "{{\"type\":\"step\",\"step\":{t},\"loss\":1e30}}\n"
        ));
    }
    input.push_str(&format!("{decide}\n"));
    let (replies, out) = run(&ARGS, input.as_bytes());
    assert!(out.status.success());
    assert!(replies.iter().all(|r| r["type"] != "error"), "{replies:?}");
    assert_eq!(replies.last().unwrap()["type"], "decision");
}

/// Drives a session for T steps with K decisions, checking every reply against the next.
fn session_run(policy: &[u8], total_steps: u64, decisions: u32) -> Vec<Reply> {
    let cfg = RunConfig {
        total_steps,
        decisions,
    };
    let loaded = load_any(policy, cfg, Hyperparams::INITIAL, Mode::Greedy).unwrap();
    let mut session = Session::new(loaded.controller, cfg, loaded.preset);
    let mut replies = vec![session.ready()];
    for t in 0..total_steps {
        let step = json!({"type": "step", "step": t, "loss": 1.0});
        let ack = session.handle_line(&step.to_string()).unwrap();
        let due = matches!(
            ack,
            Reply::Ack {
                status: lhopt_jsonl::protocol::Status::DecisionDue,
                ..
            }
        );
        replies.push(ack);
        if due {
            let decide = r#"{"type":"decide","param_norm":1,"displacement":0.1}"#;
            replies.push(session.handle_line(decide).unwrap());
        }
    }
    replies
}

fn want(r: &Reply) -> bool {
    match r {
        Reply::Ready {
            want_reductions, ..
        }
        | Reply::Ack {
            want_reductions, ..
        }
        | Reply::Decision {
            want_reductions, ..
        } => *want_reductions,
        Reply::Error { .. } => panic!("{r:?}"),
    }
}

#[test]
fn the_ack_announcing_a_decision_says_whether_the_step_after_it_needs_reductions() {
    // Feature set 1 (the shipped policy) and 2 (the untrained test policy).
    let shipped = std::fs::read(DEFAULT_POLICY).unwrap();
    for policy in [shipped, tiny_policy_bytes(TEST_SEED)] {
        let replies = session_run(&policy, 400, 16);
        let mut decisions = 0;
        for pair in replies.windows(2) {
            if let Reply::Decision { .. } = pair[1] {
                decisions += 1;
                assert_eq!(want(&pair[0]), want(&pair[1]), "{:?}", pair);
            }
        }
        assert_eq!(decisions, 16);
        // At T = 400, K = 16 the decision after step 74 is followed by a sampled step.
        let after_74 = replies
            .iter()
            .position(|r| matches!(r, Reply::Ack { step: 74, .. }))
            .unwrap();
        assert!(want(&replies[after_74]), "{:?}", replies[after_74]);
    }
}

#[test]
fn when_k_divides_t_the_last_decision_says_the_run_is_finished() {
    let policy = tiny_policy_bytes(TEST_SEED);
    for (total_steps, decisions, last_is_decision) in [(40, 4, true), (42, 4, false)] {
        let replies = session_run(&policy, total_steps, decisions);
        let finished: Vec<bool> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Decision { finished, .. } => Some(*finished),
                _ => None,
            })
            .collect();
        assert_eq!(finished.len(), decisions as usize);
        assert_eq!(finished.last(), Some(&last_is_decision));
        assert!(finished[..finished.len() - 1].iter().all(|f| !f));
        let last = replies.last().unwrap();
        if !last_is_decision {
            assert!(matches!(
                last,
                Reply::Ack {
                    status: lhopt_jsonl::protocol::Status::Finished,
                    ..
                }
            ));
        }
    }
}
