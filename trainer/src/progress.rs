//! Progress bars that also reach logs: on a terminal, indicatif's redrawn bar; anywhere else
//! (a file, a pipe, `nohup`, CI), a plain line at most every [`LOG_INTERVAL`], so a run started
//! in the background still says where it is.
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// Least time between two progress lines written to a log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// A bar of `len` steps in `template`'s style (`=> ` as its characters), drawn to
/// [`draw_target`].
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), draw_target()).with_style(style)
}

/// A [`MultiProgress`] drawn to [`draw_target`]; its bars share one log line.
pub fn multi() -> MultiProgress {
    MultiProgress::with_draw_target(draw_target())
}

/// Standard error: redrawn in place on a terminal, throttled lines otherwise.
fn draw_target() -> ProgressDrawTarget {
    if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        log_target(LOG_INTERVAL, io::stderr())
    }
}

/// Plain lines to `out`, at most one per `interval` ([`LogLines`]).
pub(crate) fn log_target<W: Write + Send + std::fmt::Debug + 'static>(
    interval: Duration,
    out: W,
) -> ProgressDrawTarget {
    ProgressDrawTarget::term_like(Box::new(LogLines::new(interval, out)))
}

/// A log tests can read back while a bar owns its writer.
#[cfg(test)]
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedLog(std::sync::Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl SharedLog {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl Write for SharedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A terminal stand-in for logs: it collects what indicatif draws in one frame (ignoring the
/// cursor moves that would redraw it in place) and writes the frame as one line when it differs
/// from the last one written and `interval` has passed since.
#[derive(Debug)]
struct LogLines<W> {
    interval: Duration,
    state: Mutex<LogState<W>>,
}

#[derive(Debug)]
struct LogState<W> {
    out: W,
    /// The frame being drawn: finished lines, then the open one.
    lines: Vec<String>,
    open: String,
    last_written: Option<(Instant, String)>,
}

impl<W: Write> LogLines<W> {
    fn new(interval: Duration, out: W) -> Self {
        Self {
            interval,
            state: Mutex::new(LogState {
                out,
                lines: Vec::new(),
                open: String::new(),
                last_written: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState<W>> {
        // A panic elsewhere while drawing leaves nothing half-written that matters here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<W: Write + Send + std::fmt::Debug> TermLike for LogLines<W> {
    fn width(&self) -> u16 {
        120
    }

    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        let mut st = self.state();
        let line = std::mem::take(&mut st.open) + s;
        st.lines.push(line);
        Ok(())
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.state().open.push_str(&s.replace('\r', ""));
        Ok(())
    }

    fn clear_line(&self) -> io::Result<()> {
        self.state().open.clear();
        Ok(())
    }

    /// The end of a frame: write it if it is due.
    fn flush(&self) -> io::Result<()> {
        let mut st = self.state();
        let open = std::mem::take(&mut st.open);
        let mut parts = std::mem::take(&mut st.lines);
        parts.push(open);
        let text = parts
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        let now = Instant::now();
        let due = match &st.last_written {
            None => true,
            Some((at, last)) => *last != text && now.duration_since(*at) >= self.interval,
        };
        if text.is_empty() || !due {
            return Ok(());
        }
        writeln!(st.out, "{text}")?;
        st.out.flush()?;
        st.last_written = Some((now, text));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(log: &LogLines<Vec<u8>>) -> String {
        String::from_utf8(log.state().out.clone()).unwrap()
    }

    fn frame(log: &LogLines<Vec<u8>>, lines: &[&str]) {
        log.clear_line().unwrap();
        for l in &lines[..lines.len() - 1] {
            log.write_line(l).unwrap();
        }
        log.write_str(lines[lines.len() - 1]).unwrap();
        log.flush().unwrap();
    }

    #[test]
    fn the_first_frame_is_written_and_then_none_within_the_interval() {
        let log = LogLines::new(Duration::from_secs(3600), Vec::new());
        frame(&log, &["imitate [=> ] 1/10"]);
        frame(&log, &["imitate [==> ] 2/10"]);
        assert_eq!(written(&log), "imitate [=> ] 1/10\n");
    }

    #[test]
    fn bars_of_one_frame_share_a_line_and_empty_frames_are_skipped() {
        let log = LogLines::new(Duration::ZERO, Vec::new());
        frame(&log, &["\r grid 1/5 ", "runs 0/3"]);
        frame(&log, &[""]);
        frame(&log, &["\r grid 1/5 ", "runs 0/3"]);
        frame(&log, &["\r grid 2/5 ", "runs 0/3"]);
        assert_eq!(written(&log), "grid 1/5 | runs 0/3\ngrid 2/5 | runs 0/3\n");
    }

    #[test]
    fn a_real_bar_reaches_the_log_one_line_per_frame() {
        let out = SharedLog::default();
        let bar = ProgressBar::with_draw_target(Some(4), log_target(Duration::ZERO, out.clone()))
            .with_style(ProgressStyle::with_template("{msg} {pos}/{len}").unwrap())
            .with_message("cloning");
        for _ in 0..4 {
            bar.inc(1);
        }
        bar.finish_and_clear();
        let text = out.text();
        assert!(text.lines().all(|l| l.starts_with("cloning ")), "{text:?}");
        assert_eq!(text.lines().last(), Some("cloning 4/4"), "{text:?}");
    }
}
