//! Drawing the model: a ratatui frame for the terminal view, plain text for `--plain`.
//! Both take the time to show from the model, never from the clock, so tests are exact.

use std::fmt::Write as _;
use std::net::IpAddr;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use super::view::{Blocked, ListRow, Model, Series};
use super::{Sort, Ui};

/// Verdicts that drop (or, in monitor mode, would drop) traffic: shown in red when moving.
const DROPS: [&str; 4] = ["blocklisted", "rate_limited", "malformed", "monitored"];
const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
const OFFENDERS_NOTE: &str = "per-source rates are not tracked by the kernel";

/// `1234` → `1.2k`: fits in six columns up to the petas.
pub fn si(value: f64) -> String {
    let units = ["", "k", "M", "G", "T", "P"];
    let mut v = value;
    let mut unit = 0;
    while v >= 999.5 && unit + 1 < units.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}")
    } else if v < 9.95 {
        format!("{v:.1}{}", units[unit])
    } else {
        format!("{v:.0}{}", units[unit])
    }
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), si)
}

/// A short duration: `42s`, `7m`, `3h`, `2d`.
pub fn span_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7_199 => format!("{}m", s / 60),
        7_200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn age(now_ms: u64, at_ms: u64) -> String {
    if at_ms == 0 {
        "-".into()
    } else {
        span_ms(now_ms.saturating_sub(at_ms))
    }
}

fn expires(now_ms: u64, at: Option<u64>) -> String {
    match at {
        None => "never".into(),
        Some(t) if t <= now_ms => "now".into(),
        Some(t) => span_ms(t - now_ms),
    }
}

/// The last `width` points of `history` as bars scaled to their largest; zero is blank.
pub fn sparkline(history: impl IntoIterator<Item = u64>, width: usize) -> String {
    let points: Vec<u64> = history.into_iter().collect();
    let points = &points[points.len().saturating_sub(width)..];
    let max = points.iter().copied().max().unwrap_or(0);
    points
        .iter()
        .map(|&p| {
            if p == 0 || max == 0 {
                ' '
            } else {
                let level = (p as f64 / max as f64 * (SPARK.len() - 1) as f64).round() as usize;
                SPARK[level.min(SPARK.len() - 1)]
            }
        })
        .collect()
}

fn feed_state(row: &ListRow) -> &'static str {
    match &row.feed {
        None => "",
        Some(f) if f.degraded => "DOWN",
        Some(f) if f.last_success_ms.is_none() && f.errors_total > 0 => "ERR",
        Some(f) if f.last_success_ms.is_none() => "wait",
        Some(_) => "ok",
    }
}

/// Offenders in the order `sort` asks for.
pub fn sorted_offenders(model: &Model, sort: Sort) -> Vec<&Blocked> {
    let mut rows: Vec<&Blocked> = model.offenders.iter().collect();
    match sort {
        Sort::Newest => rows.sort_by_key(|b| std::cmp::Reverse(b.created_at_ms)),
        Sort::Expiry => rows.sort_by_key(|b| b.expires_at_ms.unwrap_or(u64::MAX)),
        Sort::Source => rows.sort_by_key(|b| {
            let addr = b
                .net
                .split('/')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok());
            (addr, b.net.clone())
        }),
    }
    rows
}

fn header_line(model: &Model, ui: &Ui) -> String {
    let who = model.identity.as_ref().map_or_else(
        || "?".to_owned(),
        |i| format!("{} ({}, {})", i.iface, i.xdp_mode, i.mode),
    );
    let total = rate(model.total_rate());
    // The time of day (UTC) is enough beside a live view.
    let updated = model.updated_at_ms.map_or_else(
        || "never".to_owned(),
        |ms| {
            let stamp = crate::kernel::clock::format_rfc3339_ms(ms);
            stamp
                .split_once('T')
                .map_or(stamp.clone(), |(_, time)| time.to_owned())
        },
    );
    format!(
        "api-shield top · {who} · {total} pkt/s · {updated}{}",
        if ui.paused { " · PAUSED" } else { "" }
    )
}

fn title(text: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(Span::styled(
        text,
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

/// A number, right-aligned in its column.
fn num(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).alignment(Alignment::Right))
}

fn head(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.to_vec()).style(Style::default().add_modifier(Modifier::BOLD))
}

/// Draws the whole view into `frame`; fits 80x24 and grows with the terminal.
pub fn draw(frame: &mut Frame, model: &Model, ui: &Ui) {
    let [top, middle, offenders, latest, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(10),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(header_line(model, ui)).style(Style::default().add_modifier(Modifier::BOLD)),
        top,
    );
    let [traffic, lists] =
        Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).areas(middle);
    draw_traffic(frame, model, traffic);
    draw_lists(frame, model, lists);
    draw_offenders(frame, model, ui, offenders);
    draw_latest(frame, model, latest);
    let status = match &model.error {
        Some(e) => Line::from(Span::styled(
            format!("daemon: {e}"),
            Style::default().fg(Color::Red),
        )),
        None => Line::from(format!(
            "q quit · p {} · s sort ({}) · every {}",
            if ui.paused { "resume" } else { "pause" },
            ui.sort.name(),
            humantime::format_duration(ui.interval)
        )),
    };
    frame.render_widget(Paragraph::new(status), footer);
}

fn draw_traffic(frame: &mut Frame, model: &Model, area: Rect) {
    let block = title("packets/s by verdict");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    // verdict, pkt/s, total, history: the history takes what is left.
    let fixed = 12 + 7 + 7 + 3;
    let spark_width = usize::from(inner.width.saturating_sub(fixed));
    let rows = model.verdicts.iter().map(|(name, s): &(&str, Series)| {
        let moving = s.rate.is_some_and(|r| r > 0.0);
        let style = if moving && DROPS.contains(name) {
            Style::default().fg(Color::Red)
        } else if moving {
            Style::default().fg(Color::Green)
        } else {
            Style::default()
        };
        Row::new(vec![
            Cell::from(*name),
            num(rate(s.rate)),
            num(si(s.packets_total as f64)),
            Cell::from(sparkline(s.history.iter().copied(), spark_width)),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Fill(1),
        ],
    )
    .header(head(&["verdict", "  pkt/s", "  total", "history"]));
    frame.render_widget(table, inner);
}

fn draw_lists(frame: &mut Frame, model: &Model, area: Rect) {
    let rows = model.lists.iter().map(|l| {
        let state = feed_state(l);
        let style = match state {
            "DOWN" | "ERR" => Style::default().fg(Color::Red),
            _ => Style::default(),
        };
        Row::new(vec![
            Cell::from(l.name.clone()),
            num(si(l.entries as f64)),
            num(rate(l.drop_rate)),
            Cell::from(state),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(4),
        ],
    )
    .header(head(&["list", "  size", "drop/s", "feed"]))
    .block(title("lists & feeds"));
    frame.render_widget(table, area);
}

fn draw_offenders(frame: &mut Frame, model: &Model, ui: &Ui, area: Rect) {
    let now = model.updated_at_ms.unwrap_or(0);
    let kernel_rate = model
        .lists
        .iter()
        .find(|l| l.name == crate::model::ORIGIN_KERNEL_NAME)
        .and_then(|l| l.drop_rate);
    let heading = format!(
        "offenders by {}: {} auto-blocked, {} drop/s (no per-source rates)",
        ui.sort.name(),
        model.offenders.len(),
        rate(kernel_rate),
    );
    let rows = sorted_offenders(model, ui.sort).into_iter().map(|b| {
        Row::new(vec![
            Cell::from(b.net.clone()),
            Cell::from("auto-blocked"),
            Cell::from(b.origin.clone()),
            Cell::from(age(now, b.created_at_ms)),
            Cell::from(expires(now, b.expires_at_ms)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(12),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(7),
        ],
    )
    .header(head(&["source", "verdict", "origin", "age", "expires"]))
    .block(title(&heading));
    frame.render_widget(table, area);
}

fn draw_latest(frame: &mut Frame, model: &Model, area: Rect) {
    let now = model.updated_at_ms.unwrap_or(0);
    let rows = model.latest.iter().map(|b| {
        Row::new(vec![
            Cell::from(age(now, b.created_at_ms)),
            Cell::from(b.net.clone()),
            Cell::from(b.origin.clone()),
            Cell::from(expires(now, b.expires_at_ms)),
            Cell::from(b.reason.clone().unwrap_or_default()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Fill(2),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Fill(1),
        ],
    )
    .header(head(&["age", "blocked", "origin", "expires", "reason"]))
    .block(title("latest decisions"));
    frame.render_widget(table, area);
}

/// The view as plain text, for `--plain` and for output that is not a terminal.
pub fn plain(model: &Model, ui: &Ui) -> String {
    let now = model.updated_at_ms.unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "== {}", header_line(model, ui));
    if let Some(e) = &model.error {
        let _ = writeln!(out, "daemon: {e}");
    }
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>12} {:>10}  history",
        "verdict", "pkt/s", "packets", "bytes/s"
    );
    for (name, s) in &model.verdicts {
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>12} {:>10}  {}",
            name,
            rate(s.rate),
            s.packets_total,
            rate(s.byte_rate),
            sparkline(s.history.iter().copied(), 20).trim_end()
        );
    }
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>9} {:>12}  feed",
        "list", "entries", "drops/s", "drops"
    );
    for l in &model.lists {
        let feed = match &l.feed {
            Some(f) => format!(
                "{} errors={}{}",
                feed_state(l),
                f.errors_total,
                f.last_error
                    .as_deref()
                    .map(|e| format!(" last_error={e}"))
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>9} {:>12}  {}",
            l.name,
            l.entries,
            rate(l.drop_rate),
            l.drops_total,
            feed
        );
    }
    let _ = writeln!(
        out,
        "offenders: kernel auto-blocks, by {} ({OFFENDERS_NOTE}): {}",
        ui.sort.name(),
        model.offenders.len()
    );
    for b in sorted_offenders(model, ui.sort) {
        let _ = writeln!(
            out,
            "  {:<43} auto-blocked origin={} age={} expires={}",
            b.net,
            b.origin,
            age(now, b.created_at_ms),
            expires(now, b.expires_at_ms)
        );
    }
    let _ = writeln!(out, "latest decisions: {}", model.latest.len());
    for b in model.latest.iter().take(10) {
        let _ = writeln!(
            out,
            "  {:>5} ago  {:<43} origin={} expires={} reason={}",
            age(now, b.created_at_ms),
            b.net,
            b.origin,
            expires(now, b.expires_at_ms),
            b.reason.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::view::tests::flooded;
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::Duration;

    fn ui() -> Ui {
        Ui {
            paused: false,
            sort: Sort::Newest,
            interval: Duration::from_secs(1),
        }
    }

    fn screen(model: &Model, ui: &Ui, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, model, ui)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
            .collect()
    }

    #[test]
    fn an_80x24_terminal_shows_the_offender_and_the_flood() {
        let model = flooded();
        let lines = screen(&model, &ui(), 80, 24);
        let text = lines.join("\n");
        let offender = lines
            .iter()
            .find(|l| l.contains("198.18.1.35/32") && l.contains("auto-blocked"))
            .unwrap_or_else(|| panic!("no offender row:\n{text}"));
        assert!(offender.contains("kernel"), "{offender}");
        assert!(offender.contains("5s"), "age: {offender}");
        assert!(offender.contains("115s"), "expiry: {offender}");
        assert!(text.contains("srv0 (skb, enforce)"), "{text}");
        let limited = lines
            .iter()
            .find(|l| l.contains("rate_limited"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(limited.contains("2.5k"), "{limited}");
        assert!(text.contains("198.18.0.77/32"), "latest decisions: {text}");
        assert!(text.contains("DOWN"), "feed status: {text}");
        assert!(text.contains("q quit"), "{text}");
    }

    #[test]
    fn pause_sort_and_other_sizes() {
        let model = flooded();
        let ui = Ui {
            paused: true,
            sort: Sort::Expiry,
            ..ui()
        };
        let text = screen(&model, &ui, 132, 40).join("\n");
        assert!(text.contains("PAUSED"), "{text}");
        assert!(text.contains("sort (expiry)"), "{text}");
        // Too small to be useful, but never a panic.
        screen(&model, &ui, 20, 5);
        screen(&Model::new(), &ui, 80, 24);
    }

    #[test]
    fn plain_text_names_everything() {
        let text = plain(&flooded(), &ui());
        assert!(text.contains("198.18.1.35/32"), "{text}");
        assert!(
            text.contains("auto-blocked origin=kernel age=5s expires=115s"),
            "{text}"
        );
        assert!(text.contains("rate_limited"), "{text}");
        assert!(text.contains("last_error=no such file"), "{text}");
    }

    #[test]
    fn helpers() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1_234.0), "1.2k");
        assert_eq!(si(45_678.0), "46k");
        assert_eq!(si(2_500_000.0), "2.5M");
        assert_eq!(span_ms(59_000), "59s");
        assert_eq!(span_ms(600_000), "10m");
        assert_eq!(sparkline([0, 1, 2, 4, 8], 4), "▂▃▅█");
        assert_eq!(sparkline([0, 0], 10), "  ");
    }
}
