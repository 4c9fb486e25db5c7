//! A frozen LHOPT policy on a Cortex-M4F (Arm MPS2-AN386 under QEMU): the policy is embedded with
//! `include_bytes!`, decoded into fixed arrays (no allocator exists), and steers the fixed
//! scenario of `lhopt-embed` through the controller's observe/decide path. It prints every
//! decision's hyperparameters as raw f32 bits and a fingerprint of the policy's recurrent state
//! (so the host can check both bit for bit), and the instruction count of each decision, measured with SysTick under `-icount shift=0` (one tick =
//! 40 instructions). With the `phases` feature it also prints where a decision's instructions go
//! (see [`phases`]).
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
    #[cfg(feature = "phases")]
    let mut phases = phases::Phases::default();
    let run_start = clock.now();
    replay(ctrl, &scenario, |ctrl, k, inputs| {
        #[cfg(feature = "phases")]
        let before = phases.copy(&clock, ctrl);
        let start = clock.now();
        let decision = ctrl.decide(inputs);
        let ticks = clock.since(start);
        #[cfg(feature = "phases")]
        phases.replay(&clock, ctrl, before, inputs);
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
    #[cfg(feature = "phases")]
    let replay_ticks = phases.spent();
    #[cfg(not(feature = "phases"))]
    let replay_ticks = 0;
    let observe_ticks = clock
        .since(run_start)
        .saturating_sub(decision_ticks + replay_ticks);
    out.text(b"decisions ");
    out.dec(decisions);
    out.text(b" mean decision instructions ");
    out.dec(decision_ticks.saturating_mul(INSTRUCTIONS_PER_TICK) / decisions.max(1));
    out.text(b" mean observe instructions ");
    out.dec(observe_ticks.saturating_mul(INSTRUCTIONS_PER_TICK) / scenario.total_steps as u32);
    out.text(b"\n");
    #[cfg(feature = "phases")]
    phases.print(&mut out);
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

/// Where a decision's instructions go: before each decision the controller's observer and
/// recurrent state are copied, and after it the decision is replayed on the copies step by step
/// through lhopt-core's public API (the same functions `Controller::decide` calls), each step
/// timed with SysTick. The matrix-vector products are timed apart from the rest of the network,
/// on zero inputs of the right sizes: their instruction counts do not depend on the values.
/// Printed once, as means over the decisions; their sum differs from the mean decision by the
/// checks and calls between the steps. The copies and the replay enlarge the stack: peak stack
/// figures come from builds without this feature.
#[cfg(feature = "phases")]
mod phases {
    use core::hint::black_box;

    use lhopt_core::{
        Controller, DecisionInputs, LstmState, NUM_ACTION_LOGITS, OBS_DIM, Observer, Packed,
        PolicyNet, greedy,
    };

    use super::{Clock, HIDDEN, INSTRUCTIONS_PER_TICK, Out, POST, PRE};

    /// What a decision starts from.
    pub(super) struct Before {
        observer: Observer,
        state: LstmState<HIDDEN>,
    }

    /// SysTick ticks per phase, summed over the decisions.
    #[derive(Default)]
    pub(super) struct Phases {
        /// All ticks spent copying and replaying, which are neither a decision's nor a step's.
        spent: u32,
        decisions: u32,
        observation: u32,
        normalisation: u32,
        products: u32,
        rest_of_network: u32,
        greedy: u32,
        apply: u32,
    }

    impl Phases {
        /// What the decision about to be taken starts from.
        pub(super) fn copy(
            &mut self,
            clock: &Clock,
            ctrl: &Controller<PRE, HIDDEN, POST>,
        ) -> Before {
            let start = clock.now();
            let before = Before {
                observer: ctrl.observer().clone(),
                state: *ctrl.lstm_state(),
            };
            self.spent += clock.since(start);
            before
        }

        pub(super) fn spent(&self) -> u32 {
            self.spent
        }

        /// Replays the decision taken from `before`, phase by phase.
        pub(super) fn replay(
            &mut self,
            clock: &Clock,
            ctrl: &Controller<PRE, HIDDEN, POST>,
            before: Before,
            inputs: &DecisionInputs,
        ) {
            let replay_start = clock.now();
            let Before {
                mut observer,
                mut state,
            } = before;
            let net = ctrl.policy().net();
            let timed = |ticks: &mut u32, start: u32| *ticks += clock.since(start);

            let mut obs = [0.0; OBS_DIM];
            let start = clock.now();
            observer.observation_into(inputs, &mut obs);
            timed(&mut self.observation, start);
            // Computed once when the policy loads, so not part of a decision.
            let scale = net.input_scale();
            let start = clock.now();
            let x = net.normalise(&obs, &scale);
            timed(&mut self.normalisation, start);
            let start = clock.now();
            let logits = net.forward_normalised(&x, &mut state);
            let network = clock.since(start);
            let start = clock.now();
            products(net);
            let products = clock.since(start);
            self.products += products;
            self.rest_of_network += network.saturating_sub(products);
            let start = clock.now();
            let action = greedy(&logits);
            timed(&mut self.greedy, start);
            let start = clock.now();
            black_box(observer.apply(&action));
            timed(&mut self.apply, start);
            self.decisions += 1;
            self.spent += clock.since(replay_start);
        }

        pub(super) fn print(&self, out: &mut Out) {
            out.text(b"mean instructions per phase:");
            for (name, ticks) in [
                (&b"observation"[..], self.observation),
                (b"normalisation", self.normalisation),
                (b"products", self.products),
                (b"rest-of-network", self.rest_of_network),
                (b"greedy", self.greedy),
                (b"apply", self.apply),
            ] {
                out.text(b" ");
                out.text(name);
                out.text(b" ");
                out.dec(ticks.saturating_mul(INSTRUCTIONS_PER_TICK) / self.decisions.max(1));
            }
            out.text(b"\n");
        }
    }

    /// The network's five matrix-vector products, as `PolicyNet::forward_normalised` makes them.
    #[inline(never)]
    fn products(net: &PolicyNet<PRE, HIDDEN, POST>) {
        let mut pre = [0.0; PRE];
        net.pre_w.matvec_into(black_box(&[0.0; OBS_DIM]), &mut pre);
        let mut gates = [[0.0; HIDDEN]; 4];
        net.lstm_wx
            .matvec_into(black_box(&pre), gates.as_flattened_mut());
        black_box(&gates);
        net.lstm_wh
            .matvec_into(black_box(&[0.0; HIDDEN]), gates.as_flattened_mut());
        let mut post = [0.0; POST];
        net.post_w.matvec_into(black_box(&[0.0; HIDDEN]), &mut post);
        let mut logits = [0.0; NUM_ACTION_LOGITS];
        net.heads_w.matvec_into(black_box(&post), &mut logits);
        black_box((&gates, &logits));
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
