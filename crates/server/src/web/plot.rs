//! Plots as inline SVG, drawn on the server: counts over time, one or a few
//! series. No script and no style attribute (the page's
//! Content-Security-Policy allows neither inline): presentation attributes
//! only. Series are told apart by more than colour: each has its own dash
//! pattern and marker shape, from the Okabe-Ito palette (distinct for the
//! common colour-vision deficiencies), and its name and latest value are
//! written in an HTML legend beside the plot, which stays readable when a
//! phone scales the drawing down. A table of the same numbers follows in a
//! `<details>`, for screen readers and for a person who wants the figures.
//!
//! Every label passes through [`Esc`]; the numbers are the plot's own.

use std::fmt::Write as _;

use time::OffsetDateTime;

use super::html::Esc;

/// The drawing's size in its own units (it is scaled to the page's width).
const W: f64 = 420.0;
const H: f64 = 150.0;
/// Room left of the axis for the values, and below it for the dates.
const LEFT: f64 = 34.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// How a series is drawn: colour, dash pattern, marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Style {
    pub(crate) colour: &'static str,
    /// `stroke-dasharray`, empty for a solid line.
    pub(crate) dash: &'static str,
    pub(crate) marker: Marker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
}

/// The styles in the order series take them: Okabe-Ito blue, vermillion,
/// bluish green, reddish purple, orange; each line dashed differently and
/// marked with a different shape.
pub(crate) const STYLES: [Style; 5] = [
    Style {
        colour: "#0072B2",
        dash: "",
        marker: Marker::Circle,
    },
    Style {
        colour: "#D55E00",
        dash: "6 3",
        marker: Marker::Square,
    },
    Style {
        colour: "#009E73",
        dash: "2 3",
        marker: Marker::Triangle,
    },
    Style {
        colour: "#CC79A7",
        dash: "8 3 2 3",
        marker: Marker::Diamond,
    },
    Style {
        colour: "#E69F00",
        dash: "1 4",
        marker: Marker::Cross,
    },
];

/// One point: when, how many, and whether to draw it hollow (a scan that
/// did not complete, say), with its note for the tooltip and the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Point {
    pub(crate) at: OffsetDateTime,
    pub(crate) value: u64,
    pub(crate) hollow: bool,
    pub(crate) note: &'static str,
}

impl Point {
    pub(crate) fn new(at: OffsetDateTime, value: u64) -> Point {
        Point {
            at,
            value,
            hollow: false,
            note: "",
        }
    }
}

/// A named series of points, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) style: Style,
    pub(crate) points: Vec<Point>,
}

fn marker(out: &mut String, shape: Marker, x: f64, y: f64, colour: &str, hollow: bool) {
    let fill = if hollow { "#fff" } else { colour };
    let paint = format!("fill=\"{fill}\" stroke=\"{colour}\" stroke-width=\"1.5\"");
    let _ = match shape {
        Marker::Circle => write!(out, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.2\" {paint}"),
        Marker::Square => write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\" {paint}",
            x - 3.0,
            y - 3.0
        ),
        Marker::Triangle => write!(
            out,
            "<polygon points=\"{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" {paint}",
            y - 4.0,
            x - 3.5,
            y + 2.5,
            x + 3.5,
            y + 2.5
        ),
        Marker::Diamond => write!(
            out,
            "<polygon points=\"{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}\" {paint}",
            y - 4.0,
            x + 4.0,
            y + 4.0,
            x - 4.0
        ),
        Marker::Cross => write!(
            out,
            "<path d=\"M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"",
            x - 3.0,
            y - 3.0,
            x + 3.0,
            y + 3.0,
            x - 3.0,
            y + 3.0,
            x + 3.0,
            y - 3.0
        ),
    };
}

/// A small swatch of a series' line and marker, for the legend.
fn swatch(style: Style) -> String {
    let dash = if style.dash.is_empty() {
        String::new()
    } else {
        format!(" stroke-dasharray=\"{}\"", style.dash)
    };
    let mut out = format!(
        "<svg class=\"swatch\" viewBox=\"0 0 28 10\" width=\"28\" height=\"10\" aria-hidden=\"true\">\
         <line x1=\"0\" y1=\"5\" x2=\"28\" y2=\"5\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
        style.colour
    );
    marker(&mut out, style.marker, 14.0, 5.0, style.colour, false);
    out.push_str("/></svg>");
    out
}

fn date_label(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:02}-{:02} {:02}:{:02}",
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// The plot of `series` over a shared time axis, with `what` as its caption
/// (and the drawing's accessible name). Empty when no series has a point.
pub(crate) fn chart(what: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (Some(t0), Some(t1)) = (
        all.clone().map(|p| p.at).min(),
        all.clone().map(|p| p.at).max(),
    ) else {
        return String::new();
    };
    let max = all.map(|p| p.value).max().unwrap_or(0).max(1);
    let start = t0.unix_timestamp() as f64;
    let span = ((t1.unix_timestamp() as f64) - start).max(1.0);
    let single = t0 == t1;
    let x_of = |at: OffsetDateTime| {
        if single {
            LEFT + (W - LEFT - RIGHT) / 2.0
        } else {
            LEFT + (at.unix_timestamp() as f64 - start) / span * (W - LEFT - RIGHT)
        }
    };
    let y_of = |value: u64| H - BOTTOM - (value as f64) / (max as f64) * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" preserveAspectRatio=\"xMidYMid meet\">",
        Esc(what)
    );
    // Axes, a middle grid line, the highest value and the time span.
    let (x0, x1, y0, ytop) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let ymid = y_of(max / 2);
    let _ = write!(
        svg,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#6b7280\" stroke-width=\"1\"/>\
         <line x1=\"{x0}\" y1=\"{ytop}\" x2=\"{x0}\" y2=\"{y0}\" stroke=\"#6b7280\" stroke-width=\"1\"/>\
         <line x1=\"{x0}\" y1=\"{ytop}\" x2=\"{x1}\" y2=\"{ytop}\" stroke=\"#e5e7eb\" stroke-width=\"1\"/>\
         <line x1=\"{x0}\" y1=\"{ymid:.1}\" x2=\"{x1}\" y2=\"{ymid:.1}\" stroke=\"#e5e7eb\" stroke-width=\"1\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#374151\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" fill=\"#374151\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{y0}\" font-size=\"11\" fill=\"#374151\" text-anchor=\"end\">0</text>\
         <text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#374151\" text-anchor=\"{}\">{}</text>",
        LEFT - 4.0,
        TOP + 4.0,
        LEFT - 4.0,
        ymid + 4.0,
        max / 2,
        LEFT - 4.0,
        x_of(t0),
        H - 6.0,
        // One point is drawn in the middle, its time under it.
        if single { "middle" } else { "start" },
        date_label(t0),
    );
    if !single {
        let _ = write!(
            svg,
            "<text x=\"{x1}\" y=\"{}\" font-size=\"11\" fill=\"#374151\" text-anchor=\"end\">{}</text>",
            H - 6.0,
            date_label(t1)
        );
    }
    for one in series {
        let style = one.style;
        if one.points.len() >= 2 {
            let line: Vec<String> = one
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", x_of(p.at), y_of(p.value)))
                .collect();
            let dash = if style.dash.is_empty() {
                String::new()
            } else {
                format!(" stroke-dasharray=\"{}\"", style.dash)
            };
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                style.colour,
                line.join(" ")
            );
        }
        // A marker on every point when they are few enough to tell apart,
        // else on the last one only (where the legend's value is read).
        let every = one.points.len() <= 64;
        for (idx, point) in one.points.iter().enumerate() {
            if !every && idx + 1 != one.points.len() {
                continue;
            }
            marker(
                &mut svg,
                style.marker,
                x_of(point.at),
                y_of(point.value),
                style.colour,
                point.hollow,
            );
            let _ = write!(
                svg,
                "><title>{}: {} at {} UTC{}{}</title></{}>",
                Esc(&one.label),
                point.value,
                date_label(point.at),
                if point.note.is_empty() { "" } else { ", " },
                Esc(point.note),
                match style.marker {
                    Marker::Circle => "circle",
                    Marker::Square => "rect",
                    Marker::Triangle | Marker::Diamond => "polygon",
                    Marker::Cross => "path",
                }
            );
        }
    }
    svg.push_str("</svg>");

    let mut legend = String::from("<ul class=\"legend\">");
    for one in series {
        let last = one
            .points
            .last()
            .map_or_else(|| "none".to_owned(), |p| p.value.to_string());
        let _ = write!(
            legend,
            "<li>{} {} <strong>{last}</strong></li>",
            swatch(one.style),
            Esc(&one.label)
        );
    }
    legend.push_str("</ul>");

    // The same numbers as a table: one row per time, one column per series.
    let mut times: Vec<OffsetDateTime> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.at))
        .collect();
    times.sort();
    times.dedup();
    let mut table = String::from(
        "<details><summary>The figures</summary><div class=\"scroll\"><table class=\"figures\"><thead><tr><th>UTC</th>",
    );
    for one in series {
        let _ = write!(table, "<th class=\"num\">{}</th>", Esc(&one.label));
    }
    table.push_str("</tr></thead><tbody>");
    for at in times.iter().rev() {
        let _ = write!(table, "<tr><td>{}</td>", date_label(*at));
        for one in series {
            match one.points.iter().find(|p| p.at == *at) {
                Some(p) if p.note.is_empty() => {
                    let _ = write!(table, "<td class=\"num\">{}</td>", p.value);
                }
                Some(p) => {
                    let _ = write!(
                        table,
                        "<td class=\"num\">{} <small>({})</small></td>",
                        p.value,
                        Esc(p.note)
                    );
                }
                None => table.push_str("<td class=\"num\">-</td>"),
            }
        }
        table.push_str("</tr>");
    }
    table.push_str("</tbody></table></div></details>");

    format!(
        "<figure class=\"plot\">{svg}<figcaption>{}</figcaption>{legend}{table}</figure>",
        Esc(what)
    )
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn series(label: &str, style: usize, values: &[(OffsetDateTime, u64)]) -> Series {
        Series {
            label: label.to_owned(),
            style: STYLES[style],
            points: values.iter().map(|(at, n)| Point::new(*at, *n)).collect(),
        }
    }

    #[test]
    fn two_series_are_told_apart_by_dash_marker_and_name_and_every_label_is_escaped() {
        let t0 = datetime!(2025-03-01 10:00 UTC);
        let t1 = datetime!(2025-03-01 11:00 UTC);
        let html = chart(
            "<b>exposed</b> in prod",
            &[
                series("exposed", 0, &[(t0, 4), (t1, 6)]),
                series("<script>x</script>", 1, &[(t0, 1), (t1, 0)]),
            ],
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("aria-label=\"&lt;b&gt;exposed&lt;/b&gt; in prod\""));
        // One solid line with circles, one dashed with squares.
        assert_eq!(html.matches("<polyline").count(), 2);
        assert!(html.contains("stroke-dasharray=\"6 3\""));
        assert!(html.contains("<circle") && html.contains("<rect"));
        // The highest value on the axis, the latest values in the legend.
        assert!(html.contains(">6</text>"));
        assert!(html.contains("exposed <strong>6</strong>"));
        // No style attribute anywhere: the CSP forbids inline style.
        assert!(!html.contains("style="));
        // The table of figures, newest first.
        let table = html.split("<tbody>").nth(1).unwrap_or_default();
        assert!(
            table.starts_with(
                "<tr><td>03-01 11:00</td><td class=\"num\">6</td><td class=\"num\">0</td>"
            ),
            "{table}"
        );
    }

    #[test]
    fn nothing_to_draw_is_no_plot_and_one_point_is_drawn_in_the_middle() {
        assert_eq!(chart("x", &[]), "");
        assert_eq!(chart("x", &[series("a", 0, &[])]), "");
        let html = chart(
            "x",
            &[series("a", 0, &[(datetime!(2025-03-01 10:00 UTC), 3)])],
        );
        assert!(html.contains("<circle cx=\"223.0\""), "{html}");
        assert!(!html.contains("<polyline"));
    }
}
