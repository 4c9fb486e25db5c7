//! Builds `examples/replay.c` with the system C compiler against the static library and the
//! committed header, runs it on the fixed scenario, and compares its decisions with the core
//! library's bit for bit (the C program also saves, frees and restores its controller halfway).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use lhopt_embed::scenario::{Scenario, TENSORS, reference_decisions_tiny};
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};

/// The `liblhopt.a` cargo built for this test run: next to the test binary, in
/// `<target>/<profile>/deps` (the copy one level up is only refreshed by `cargo build`).
fn static_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let lib = exe
        .parent()
        .expect("test binary inside <target>/<profile>/deps")
        .join("liblhopt.a");
    assert!(
        lib.exists(),
        "{} is missing: cargo builds it with the lhopt-capi library",
        lib.display()
    );
    lib
}

/// The scenario in the text format `replay.c` reads.
fn inputs_text(scenario: &Scenario) -> String {
    let mut text = format!(
        "{} {} {}\n",
        scenario.total_steps, scenario.decisions, TENSORS
    );
    for t in 0..scenario.total_steps {
        let s = scenario.step(t);
        write!(text, "{} {}", s.loss, u8::from(s.clipped)).unwrap();
        for r in &s.reductions {
            write!(
                text,
                " {} {} {} {} {} {} {} {} {} {} {} {}",
                r.numel,
                r.grad_norm,
                r.mhat_norm,
                r.mhat_minus_grad_norm,
                r.param_norm,
                r.update_norm,
                r.lr_p,
                r.grad_dot_mhat,
                r.grad_dot_param,
                r.grad_dot_update,
                r.count_v_gt_eps,
                r.sum_log_abs_update
            )
            .unwrap();
        }
        text.push('\n');
    }
    for k in 1..=scenario.decisions {
        let d = scenario.decision_inputs(k);
        writeln!(text, "{} {} {}", d.param_norm, d.displacement, d.eval_loss).unwrap();
    }
    text
}

#[test]
fn c_example_matches_the_core_library_bit_for_bit() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("replay");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let build = Command::new(&cc)
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/replay.c"))
        .arg(static_library())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` (set CC): {e}"));
    assert!(
        build.status.success(),
        "compiling examples/replay.c failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let scenario = Scenario::DEFAULT;
    let policy_bytes = tiny_policy_bytes(TEST_SEED);
    let policy = dir.path().join("untrained.lhp");
    let inputs = dir.path().join("inputs.txt");
    std::fs::write(&policy, &policy_bytes).unwrap();
    std::fs::write(&inputs, inputs_text(&scenario)).unwrap();
    let run = Command::new(&exe)
        .arg(&policy)
        .arg(&inputs)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "replay failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let expected: Vec<String> = reference_decisions_tiny(&policy_bytes, &scenario)
        .expect("reference run")
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let d = r.decision;
            let hyper: Vec<String> = d
                .hyper
                .to_array()
                .iter()
                .map(|x| format!("{:08x}", x.to_bits()))
                .collect();
            let (op, register) = match d.restart {
                lhopt_core::Restart::None => (0, 0),
                lhopt_core::Restart::Save(r) => (1, r),
                lhopt_core::Restart::Load(r) => (2, r),
                lhopt_core::Restart::Swap(r) => (3, r),
            };
            format!(
                "decision {} {} restart {op} {register}",
                i + 1,
                hyper.join(" ")
            )
        })
        .collect();
    let stdout = String::from_utf8(run.stdout).unwrap();
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), expected.len(), "number of decisions:\n{stdout}");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(
            g, e,
            "the C program's decision differs from the core library's"
        );
    }
}
