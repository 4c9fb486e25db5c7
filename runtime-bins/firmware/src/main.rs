//! A frozen LHOPT policy on a Cortex-M4F (Arm MPS2-AN386 under QEMU): the policy is embedded with
//! `include_bytes!`, decoded into fixed arrays (no allocator exists), and steers the fixed
//! scenario of `lhopt-embed` through the controller's observe/decide path. It prints every
//! decision's hyperparameters as raw f32 bits and a fingerprint of the policy's recurrent state
//! (so the host can check both bit for bit), and the instruction count of each decision, measured with SysTick under `-icount shift=0` (one tick =
//! 40 instructions).
#![no_std]
#![no_main]

use cortex_m::peripheral::{SYST, syst::SystClkSource};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use lhopt_core::{Controller, Error, Hyperparams, Mode};
use lhopt_embed::scenario::{Scenario, lstm_fingerprint, replay};
#[cfg(feature = "panic-never")]
use panic_never as _;
#[cfg(not(feature = "panic-never"))]
use panic_semihosting as _;

/// The embedded policy: `$LHOPT_FIRMWARE_POLICY` at build time, else `policies/default.lhp`
/// (see build.rs).
static POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/policy.lhp"));

// `PRE`, `HIDDEN`, `POST`: the network sizes of the embedded policy, read from its header by
// build.rs, so the weights are fixed arrays of exactly that size.
include!(concat!(env!("OUT_DIR"), "/policy.sizes.rs"));

/// Instructions per SysTick tick under `-icount shift=0` (1 ns per instruction, 25 MHz SysTick).
const INSTRUCTIONS_PER_TICK: u32 = 40;

#[entry]
fn main() -> ! {
    // The controller lives in static memory, built at compile time (`Controller::empty` is a
    // `const`), and `load` decodes the policy into it in place, so its weights exist once and
    // never on the stack. cortex-m-rt turns a `static mut` at the top of `#[entry]` into a safe
    // `&'static mut`: `main` runs once, so it is the only reference.
    static mut CONTROLLER: Controller<PRE, HIDDEN, POST> = Controller::empty();
    stack::paint();
    let status = match run(CONTROLLER) {
        Ok(()) => debug::EXIT_SUCCESS,
        Err(()) => debug::EXIT_FAILURE,
    };
    debug::exit(status);
    loop {
        cortex_m::asm::wfi();
    }
}

fn run(ctrl: &mut Controller<PRE, HIDDEN, POST>) -> Result<(), ()> {
    let mut out = Out(hio::hstdout()?);
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        return Err(());
    };
    let clock = Clock::start(peripherals.SYST);

    let scenario = Scenario::DEFAULT;
    let start = clock.now();
    let loaded = ctrl.load(
        POLICY,
        scenario.run_config(),
        Hyperparams::INITIAL,
        Mode::Greedy,
    );
    let decode_ticks = clock.since(start);
    if let Err(e) = loaded {
        out.text(b"error: loading the embedded policy failed: ");
        out.text(error_name(&e));
        out.text(b"\n");
        return Err(());
    }
    out.text(b"policy bytes ");
    out.dec(POLICY.len() as u32);
    out.text(b" decode instructions ");
    out.dec(decode_ticks.saturating_mul(INSTRUCTIONS_PER_TICK));
    out.text(b"\n");

    let (mut decision_ticks, mut decisions) = (0u32, 0u32);
    let run_start = clock.now();
    replay(ctrl, &scenario, |ctrl, k, inputs| {
        let start = clock.now();
        let decision = ctrl.decide(inputs);
        let ticks = clock.since(start);
        decision_ticks += ticks;
        decisions += 1;
        out.text(b"decision ");
        out.dec(k);
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                out.text(b" error ");
                out.text(error_name(&e));
                out.text(b"\n");
                return;
            }
        };
        for value in decision.hyper.to_array() {
            out.text(b" ");
            out.hex(value.to_bits());
        }
        out.text(b" restart ");
        out.dec(u32::from(decision.restart.to_choice()));
        out.text(b" lstm ");
        out.hex(lstm_fingerprint(ctrl.lstm_state()));
        out.text(b" instructions ");
        out.dec(ticks.saturating_mul(INSTRUCTIONS_PER_TICK));
        out.text(b"\n");
    });
    let observe_ticks = clock.since(run_start).saturating_sub(decision_ticks);
    out.text(b"decisions ");
    out.dec(decisions);
    out.text(b" mean decision instructions ");
    out.dec(decision_ticks.saturating_mul(INSTRUCTIONS_PER_TICK) / decisions.max(1));
    out.text(b" mean observe instructions ");
    out.dec(observe_ticks.saturating_mul(INSTRUCTIONS_PER_TICK) / scenario.total_steps as u32);
    out.text(b"\n");
    // Measured before the parity replay, whose second policy is test scaffolding.
    out.text(b"peak stack bytes ");
    out.dec(stack::peak_bytes());
    out.text(b" controller bytes ");
    out.dec(core::mem::size_of::<Controller<PRE, HIDDEN, POST>>() as u32);
    out.text(b"\n");
    #[cfg(feature = "parity-fixture")]
    parity::replay(&mut out)?;
    Ok(())
}

/// Peak stack use, measured by painting: every free word below the stack pointer is filled
/// with a pattern at start, and at the end the lowest word no longer holding it marks the
/// deepest the stack went (decode, controller construction and decisions included).
mod stack {
    use core::ptr::{addr_of, read_volatile, write_volatile};

    const PAINT: u32 = 0x5afe_c0de;
    /// Left unpainted below the stack pointer, for `paint`'s own frame.
    const MARGIN: usize = 1024;

    unsafe extern "C" {
        // cortex-m-rt's link.x: the top of the stack and the end of static data, where the
        // stack may grow down to.
        static _stack_start: u32;
        static _stack_end: u32;
    }

    fn bounds() -> (usize, usize) {
        (
            addr_of!(_stack_end) as usize,
            addr_of!(_stack_start) as usize,
        )
    }

    #[inline(never)]
    pub(super) fn paint() {
        let (bottom, _) = bounds();
        let top = cortex_m::register::msp::read() as usize - MARGIN;
        let mut p = bottom;
        while p < top {
            // SAFETY: [bottom, top) lies between the end of static data and the live stack
            // frames, memory nothing else uses yet; word-aligned (cortex-m-rt asserts it).
            unsafe { write_volatile(p as *mut u32, PAINT) };
            p += 4;
        }
    }

    pub(super) fn peak_bytes() -> u32 {
        let (bottom, top) = bounds();
        let mut p = bottom;
        // SAFETY: reads of word-aligned RAM between the end of static data and the stack top.
        while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        (top - p) as u32
    }
}

/// The trainer's parity fixture replayed on the device: one `parity K` line per recorded
/// observation with the 40 logits as raw f32 bits, then `greedy` and the 9 chosen actions.
#[cfg(feature = "parity-fixture")]
mod parity {
    use lhopt_core::{FrozenPolicy, LstmState, OBS_DIM, greedy};

    use super::Out;

    static POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/parity.lhp"));
    static OBS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/parity_obs.bin"));
    include!(concat!(env!("OUT_DIR"), "/parity.sizes.rs"));

    // Not inlined: its policy would otherwise enlarge the frame under which the measured run
    // goes, and the measured peak stack with it.
    #[inline(never)]
    pub(super) fn replay(out: &mut Out) -> Result<(), ()> {
        let mut policy = FrozenPolicy::<PARITY_PRE, PARITY_HIDDEN, PARITY_POST>::holding();
        if policy.decode_into(POLICY).is_err() {
            out.text(b"error: the parity fixture policy does not decode\n");
            return Err(());
        }
        let mut state = LstmState::default();
        for (k, bytes) in OBS.chunks_exact(4 * OBS_DIM).enumerate() {
            let mut obs = [0f32; OBS_DIM];
            for (x, b) in obs.iter_mut().zip(bytes.chunks_exact(4)) {
                if let [b0, b1, b2, b3] = *b {
                    *x = f32::from_le_bytes([b0, b1, b2, b3]);
                }
            }
            let logits = policy.forward(&obs, &mut state);
            out.text(b"parity ");
            out.dec(k as u32 + 1);
            for value in logits {
                out.text(b" ");
                out.hex(value.to_bits());
            }
            out.text(b" greedy");
            for choice in greedy(&logits).choices {
                out.text(b" ");
                out.dec(u32::from(choice));
            }
            out.text(b"\n");
        }
        Ok(())
    }
}

/// A name for each load or decision error, printed without `core::fmt`.
fn error_name(e: &Error) -> &'static [u8] {
    match e {
        Error::Truncated { .. } => b"truncated",
        Error::BadMagic => b"bad magic (not a policy file)",
        Error::UnsupportedVersion { .. } => b"unsupported format version",
        Error::FeatureSetMismatch { .. } => b"feature-set version mismatch",
        Error::SizeMismatch { .. } => b"sizes differ from the compiled-in preset",
        Error::Corrupt { .. } => b"CRC mismatch (corrupt)",
        Error::Malformed => b"malformed",
        Error::NonFinite => b"non-finite weight or statistic",
        Error::PolicyDiverged => b"the policy's recurrent state overflowed",
        Error::InvalidConfig(_) => b"the scenario's run configuration was rejected",
        _ => b"invalid policy",
    }
}

/// SysTick as a free-running 24-bit down-counter.
struct Clock(SYST);

impl Clock {
    const MASK: u32 = 0x00ff_ffff;

    fn start(mut syst: SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(Self::MASK);
        syst.clear_current();
        syst.enable_counter();
        Clock(syst)
    }

    fn now(&self) -> u32 {
        SYST::get_current()
    }

    /// Ticks since `start` (one wrap of 2^24 ticks = 671M instructions at most).
    fn since(&self, start: u32) -> u32 {
        start.wrapping_sub(self.now()) & Self::MASK
    }
}

/// Semihosting output without `core::fmt`, whose machinery has panic paths.
struct Out(hio::HostStream);

impl Out {
    fn text(&mut self, bytes: &[u8]) {
        // Output is best effort: a failed host write has nowhere better to be reported.
        let _ = self.0.write_all(bytes);
    }

    fn dec(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
            start -= 1;
            if n == 0 {
                break;
            }
        }
        self.text(digits.get(start..).unwrap_or(&digits));
    }

    fn hex(&mut self, n: u32) {
        let mut digits = [0u8; 8];
        for (i, slot) in digits.iter_mut().enumerate() {
            let nibble = (n >> (28 - 4 * i)) & 0xf;
            *slot = b"0123456789abcdef"
                .get(nibble as usize)
                .copied()
                .unwrap_or(b'?');
        }
        self.text(&digits);
    }
}
