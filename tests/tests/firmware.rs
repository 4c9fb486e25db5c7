//! Builds the Cortex-M4F firmware (`runtime-bins/firmware`) in its panic-never configuration,
//! which only links if the decode and decision path has no reachable panic and needs no
//! allocator, runs it under `qemu-system-arm -machine mps2-an386`, and checks that its decisions
//! are bit for bit the host library's for the same embedded policy and inputs. The firmware also
//! replays the trainer's parity fixture (feature `parity-fixture`): its logits must be within
//! 1e-5 of tch's, bit for bit the host core's, with the same greedy actions.
//!
//! Skipped, with a message, only when `qemu-system-arm` is not installed
//! (`apt-get install qemu-system-arm`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lhopt_core::{FrozenPolicy, LstmState, NUM_ACTION_LOGITS, NUM_HEADS};
use lhopt_embed::scenario::{Scenario, reference_decisions_tiny};
use lhopt_tests::{PARITY_TOLERANCE, max_abs_diff, parity_fixture};

/// The shipped default policy, which the firmware embeds unless `LHOPT_FIRMWARE_POLICY` says otherwise.
const DEFAULT_POLICY: &[u8] = include_bytes!("../../policies/default.lhp");

const QEMU: &str = "qemu-system-arm";

const FEATURES: &str = "panic-never,parity-fixture";
const TARGET: &str = "thumbv7em-none-eabihf";

fn firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime-bins/firmware")
}

fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `cargo build --release --features panic-never,parity-fixture` in the firmware's own workspace, into
/// `firmware/` beside this test's build (under `CARGO_TARGET_DIR` when that is set, never inside
/// the source tree); returns the ELF.
fn build_firmware() -> PathBuf {
    let dir = firmware_dir();
    // Cargo puts CARGO_TARGET_TMPDIR inside the target directory it builds this test in.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let target_dir = tmp.parent().unwrap_or(tmp).join("firmware");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--release", "--features", FEATURES])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("LHOPT_FIRMWARE_POLICY")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("run cargo for the firmware");
    assert!(
        out.status.success(),
        "building the panic-never firmware failed (a reachable panic shows up as an undefined \
         `rust_begin_unwind`, an allocation as a missing global allocator; is the \
         {TARGET} target installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(TARGET).join("release/lhopt-firmware")
}

/// Runs the ELF under QEMU with instruction counting; returns its stdout.
fn run_qemu(elf: &Path) -> String {
    let mut child = Command::new(QEMU)
        .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-arm");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for qemu") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the firmware did not exit within 120 s under QEMU");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "the firmware exited with {status}:\n{stdout}\n{stderr}"
    );
    stdout
}

/// One `decision K h1 .. h8 restart C lstm F instructions N` line.
struct FirmwareDecision {
    bits: [u32; 8],
    restart_choice: u8,
    lstm_fingerprint: u32,
}

fn parse(stdout: &str) -> Vec<FirmwareDecision> {
    stdout
        .lines()
        .filter(|l| l.starts_with("decision "))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words.len(), 16, "unexpected decision line {line:?}");
            let mut bits = [0u32; 8];
            for (b, w) in bits.iter_mut().zip(&words[2..10]) {
                *b = u32::from_str_radix(w, 16).expect("hex float bits");
            }
            FirmwareDecision {
                bits,
                restart_choice: words[11].parse().expect("restart choice"),
                lstm_fingerprint: u32::from_str_radix(words[13], 16).expect("hex fingerprint"),
            }
        })
        .collect()
}

/// One `parity K l1 .. l40 greedy g1 .. g9` line.
struct FirmwareParity {
    logits: [f32; NUM_ACTION_LOGITS],
    greedy: [u8; NUM_HEADS],
}

fn parse_parity(stdout: &str) -> Vec<FirmwareParity> {
    stdout
        .lines()
        .filter(|l| l.starts_with("parity "))
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                words.len(),
                3 + NUM_ACTION_LOGITS + NUM_HEADS,
                "unexpected parity line {line:?}"
            );
            let logits = std::array::from_fn(|i| {
                f32::from_bits(u32::from_str_radix(words[2 + i], 16).expect("hex float bits"))
            });
            let greedy = std::array::from_fn(|i| {
                words[3 + NUM_ACTION_LOGITS + i]
                    .parse()
                    .expect("greedy choice")
            });
            FirmwareParity { logits, greedy }
        })
        .collect()
}

/// The firmware's output under QEMU, or `None` (with a message naming `test`) when
/// `qemu-system-arm` is not installed.
fn firmware_output(test: &str) -> Option<String> {
    if !qemu_available() {
        eprintln!("SKIPPED {test}: {QEMU} is not installed (apt-get install qemu-system-arm)");
        return None;
    }
    let stdout = run_qemu(&build_firmware());
    eprintln!("firmware output:\n{stdout}");
    Some(stdout)
}

#[test]
fn firmware_replays_the_trainer_parity_fixture() {
    let Some(stdout) = firmware_output("firmware_replays_the_trainer_parity_fixture") else {
        return;
    };
    let got = parse_parity(&stdout);
    let (bytes, steps) = parity_fixture();
    assert_eq!(got.len(), steps.len(), "parity decisions replayed");
    let policy = FrozenPolicy::<32, 32, 32>::decode(&bytes).expect("the fixture policy decodes");
    let mut state = LstmState::<32>::default();
    let mut worst = 0f32;
    for (k, (g, step)) in got.iter().zip(&steps).enumerate() {
        let host = policy.forward(&step.obs, &mut state);
        assert_eq!(
            g.logits.map(f32::to_bits),
            host.map(f32::to_bits),
            "parity decision {}: logits differ between Cortex-M4F and host",
            k + 1
        );
        assert_eq!(g.greedy, step.greedy, "parity decision {}: greedy", k + 1);
        worst = worst.max(max_abs_diff(&g.logits, &step.logits));
    }
    assert!(
        worst <= PARITY_TOLERANCE,
        "max |Cortex-M4F − tch| logit difference {worst}"
    );
}

#[test]
fn firmware_decisions_match_the_host_bit_for_bit() {
    let Some(stdout) = firmware_output("firmware_decisions_match_the_host_bit_for_bit") else {
        return;
    };
    let got = parse(&stdout);
    let expected =
        reference_decisions_tiny(DEFAULT_POLICY, &Scenario::DEFAULT).expect("host reference run");
    assert_eq!(got.len(), expected.len(), "number of decisions");
    for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            g.bits,
            e.decision.hyper.to_array().map(f32::to_bits),
            "decision {}: hyperparameters differ between Cortex-M4F and host",
            k + 1
        );
        assert_eq!(
            g.restart_choice,
            e.decision.restart.to_choice(),
            "decision {}: restart",
            k + 1
        );
        assert_eq!(
            g.lstm_fingerprint,
            e.lstm_fingerprint,
            "decision {}: the policy's recurrent state differs between Cortex-M4F and host",
            k + 1
        );
    }
}
