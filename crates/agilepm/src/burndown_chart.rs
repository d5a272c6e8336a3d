//! `agilepm burndown --svg`: a sprint's burndown as a standalone SVG file, for reports and
//! e-mail, drawn as the board draws it (`board/src/chart.ts`): the ideal line dashed over
//! the whole sprint, the remaining hours solid with a point per day up to the team's
//! today, the hours' top and 0 on the left, the first and last dates below. Self-contained
//! (its style inline), so it renders wherever it is pasted.

use std::fmt::Write as _;

use agilepm_proto::planning::v1::GetSprintBurndownResponse;

const W: f64 = 640.0;
const H: f64 = 260.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

/// Characters SVG text must not carry raw.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart of `burndown`, titled `title` (the sprint's name).
pub fn svg(burndown: &GetSprintBurndownResponse, title: &str) -> String {
    let days = &burndown.days;
    // Days up to the team's today have estimates; later ones are only the ideal's.
    let shown: Vec<_> = days
        .iter()
        .filter(|d| burndown.today.is_empty() || d.date <= burndown.today)
        .collect();
    let top = days
        .iter()
        .map(|d| (d.hours_remaining as f64).max(d.ideal_hours_remaining))
        .fold(1.0, f64::max);
    let x = |i: usize| {
        if days.len() < 2 {
            LEFT
        } else {
            LEFT + i as f64 * (W - LEFT - RIGHT) / (days.len() - 1) as f64
        }
    };
    let y = |h: f64| H - BOTTOM - h * (H - TOP - BOTTOM) / top;
    let label = match shown.last() {
        Some(last) => format!(
            "{title}: {} hours remaining on {} (ideal {}), day {} of {}",
            last.hours_remaining,
            last.date,
            last.ideal_hours_remaining.round(),
            shown.len(),
            days.len()
        ),
        None => format!("{title}: the sprint has not begun ({} days)", days.len()),
    };
    let points = |values: &mut dyn Iterator<Item = (usize, f64)>| {
        values
            .map(|(i, h)| format!("{:.1},{:.1}", x(i), y(h)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{label}">
<title>{label}</title>
<style>.grid{{stroke:#c9cedb}}.ideal{{fill:none;stroke:#9aa3b5;stroke-dasharray:6 4;stroke-width:1.5}}.remaining{{fill:none;stroke:#3563e9;stroke-width:2.5}}.dot{{fill:#3563e9}}text{{font:11px system-ui,sans-serif;fill:#5a6275}}</style>
<rect width="{W}" height="{H}" fill="#fff"/>
<line class="grid" x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/>
<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/>
"##,
        label = escaped(&label),
        b = H - BOTTOM,
        r = W - RIGHT,
    );
    let ideal = points(
        &mut days
            .iter()
            .enumerate()
            .map(|(i, d)| (i, d.ideal_hours_remaining)),
    );
    let _ = writeln!(out, r#"<polyline class="ideal" points="{ideal}"/>"#);
    if !shown.is_empty() {
        let remaining = points(
            &mut shown
                .iter()
                .enumerate()
                .map(|(i, d)| (i, d.hours_remaining as f64)),
        );
        let _ = writeln!(out, r#"<polyline class="remaining" points="{remaining}"/>"#);
    }
    for (i, day) in shown.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<circle class="dot" cx="{:.1}" cy="{:.1}" r="3.5"><title>{}: {} h (ideal {:.1})</title></circle>"#,
            x(i),
            y(day.hours_remaining as f64),
            escaped(&day.date),
            day.hours_remaining,
            day.ideal_hours_remaining
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{:.1}" text-anchor="end">{} h</text>"#,
        LEFT - 6.0,
        y(top) + 4.0,
        top.round()
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{:.1}" text-anchor="end">0</text>"#,
        LEFT - 6.0,
        y(0.0) + 4.0
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            H - BOTTOM + 18.0,
            escaped(first.date.get(5..).unwrap_or(&first.date)),
            x(days.len() - 1),
            H - BOTTOM + 18.0,
            escaped(last.date.get(5..).unwrap_or(&last.date)),
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agilepm_proto::planning::v1::SprintBurndownDay;

    fn burndown(hours: &[i64], today: &str) -> GetSprintBurndownResponse {
        let first = hours[0] as f64;
        let last = (hours.len() - 1) as f64;
        GetSprintBurndownResponse {
            days: hours
                .iter()
                .enumerate()
                .map(|(i, h)| SprintBurndownDay {
                    date: format!("2026-12-{:02}", i + 4),
                    hours_remaining: *h,
                    ideal_hours_remaining: first * (1.0 - i as f64 / last),
                })
                .collect(),
            today: today.into(),
            time_zone: "UTC".into(),
        }
    }

    #[test]
    fn the_remaining_line_stops_at_the_team_s_today() {
        let chart = svg(&burndown(&[24, 18, 12, 0, 0], "2026-12-07"), "Sprint <1>");
        assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(chart.ends_with("</svg>\n"));
        assert_eq!(chart.matches("<circle").count(), 4, "four days up to today");
        assert!(
            chart.contains(
                "Sprint &lt;1&gt;: 0 hours remaining on 2026-12-07 (ideal 6), day 4 of 5"
            ),
            "{chart}"
        );
        assert!(chart.contains(">24 h</text>") && chart.contains(">12-04</text>"));
        // The ideal line runs from 24 h on the first day to 0 on the last.
        assert!(chart.contains(r#"<polyline class="ideal" points="44.0,16.0 "#));
        assert!(chart.contains(r#" 624.0,224.0"/>"#), "{chart}");
    }

    #[test]
    fn a_sprint_not_begun_has_only_its_ideal_line() {
        let chart = svg(&burndown(&[10, 10, 10], "2026-12-01"), "S");
        assert_eq!(chart.matches("<circle").count(), 0);
        assert!(!chart.contains("class=\"remaining\""));
        assert!(chart.contains("the sprint has not begun (3 days)"));
    }
}
