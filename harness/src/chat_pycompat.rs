//! Python semantics that chat templates rely on and minijinja does not give by itself: python's
//! whitespace for `strip`/`trim` (`str.isspace`, which also counts `\x1c`..`\x1f`), `json.dumps`
//! for `tojson` (separators, indent, sort_keys, ensure_ascii, float repr) and `strftime`.
//! Everything else goes to `minijinja_contrib::pycompat`.

use minijinja::value::{Kwargs, Value as JValue, ValueKind};
use minijinja::{Error, ErrorKind, State};

/// `str.isspace()` for one character.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

fn strip_with<'a>(s: &'a str, chars: Option<&str>, left: bool, right: bool) -> &'a str {
    let pred = |c: char| match chars {
        Some(set) => set.contains(c),
        None => is_py_space(c),
    };
    let s = if left { s.trim_start_matches(pred) } else { s };
    if right {
        s.trim_end_matches(pred)
    } else {
        s
    }
}

/// minijinja's pycompat callback with python's whitespace for `strip`, `lstrip`, `rstrip`.
pub fn unknown_method_callback(
    state: &State,
    value: &JValue,
    method: &str,
    args: &[JValue],
) -> Result<JValue, Error> {
    if let (Some(s), "strip" | "lstrip" | "rstrip") = (value.as_str(), method) {
        let chars: Option<String> = match args {
            [] => None,
            [a] if a.is_none() => None,
            [a] => Some(
                a.as_str()
                    .ok_or_else(|| {
                        Error::new(ErrorKind::InvalidOperation, "strip arg must be None or str")
                    })?
                    .to_string(),
            ),
            _ => return Err(Error::from(ErrorKind::TooManyArguments)),
        };
        let (l, r) = match method {
            "strip" => (true, true),
            "lstrip" => (true, false),
            _ => (false, true),
        };
        return Ok(JValue::from(strip_with(s, chars.as_deref(), l, r)));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// jinja2's `trim(value, chars=None)`: `str(value).strip(chars)`.
pub fn trim_filter(value: JValue, chars: Option<String>) -> String {
    let s = match value.as_str() {
        Some(s) => s.to_string(),
        None => value.to_string(),
    };
    strip_with(&s, chars.as_deref(), true, true).to_string()
}

/// Keyword arguments of `json.dumps` that transformers' `tojson` passes on.
pub struct JsonOptions {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl JsonOptions {
    pub fn from_kwargs(kwargs: &Kwargs) -> Result<Self, Error> {
        let indent = match kwargs.get::<Option<JValue>>("indent")? {
            None => None,
            Some(v) if v.is_none() => None,
            Some(v) => Some(match v.as_str() {
                Some(s) => s.to_string(),
                None => " ".repeat(usize::try_from(v.clone()).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be int or str",
                    )
                })?),
            }),
        };
        let (mut item_sep, key_sep) = if indent.is_some() {
            (",".to_string(), ": ".to_string())
        } else {
            (", ".to_string(), ": ".to_string())
        };
        let mut key_sep = key_sep;
        if let Some(seps) = kwargs.get::<Option<JValue>>("separators")? {
            if !seps.is_none() {
                let parts: Vec<JValue> = seps.try_iter()?.collect();
                match parts.as_slice() {
                    [a, b] if a.as_str().is_some() && b.as_str().is_some() => {
                        item_sep = a.as_str().unwrap_or_default().to_string();
                        key_sep = b.as_str().unwrap_or_default().to_string();
                    }
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            "tojson: separators must be a pair of strings",
                        ))
                    }
                }
            }
        }
        Ok(Self {
            indent,
            item_sep,
            key_sep,
            sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
            ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        })
    }
}

impl Default for JsonOptions {
    fn default() -> Self {
        Self {
            indent: None,
            item_sep: ", ".into(),
            key_sep: ": ".into(),
            sort_keys: false,
            ensure_ascii: false,
        }
    }
}

fn json_str(s: &str, ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let e = format!("{f:e}"); // e.g. "-1.2345e4", shortest round-trip digits
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mant) = match mant.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = exp as usize + 1;
            if digits.len() > point {
                format!("{}.{}", &digits[..point], &digits[point..])
            } else {
                format!("{}{}.0", digits, "0".repeat(point - digits.len()))
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        }
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    };
    format!("{sign}{body}")
}

/// `json.dumps(v, ...)` of a template value.
pub fn py_json(v: &JValue, o: &JsonOptions, level: usize, out: &mut String) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(level));
        }
    };
    match v.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: Object of type Undefined is not JSON serializable",
            ))
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                out.push_str(&i.to_string());
            } else if let Ok(f) = f64::try_from(v.clone()) {
                if v.to_string().contains(['.', 'e', 'E', 'N', 'n']) {
                    out.push_str(&py_float_repr(f));
                } else {
                    out.push_str(&v.to_string());
                }
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Map => {
            let mut keys: Vec<(String, JValue)> = v
                .try_iter()?
                .map(|k| {
                    let name = match k.kind() {
                        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
                        ValueKind::None => "null".into(),
                        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.into(),
                        _ => k.to_string(),
                    };
                    (name, k)
                })
                .collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                keys.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (name, k)) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                json_str(name, o.ensure_ascii, out);
                out.push_str(&o.key_sep);
                py_json(&v.get_item(k)?, o, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<JValue> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                py_json(item, o, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        _ => json_str(&v.to_string(), o.ensure_ascii, out),
    }
    Ok(())
}

/// (year, month 1-12, day 1-31) of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// C `strftime` (C locale) of `secs` since the epoch, UTC, for the directives chat templates use:
/// `%Y %y %m %d %e %-d %-m %b %B %h %a %A %H %I %M %S %p %j %%`.
pub fn strftime(secs: i64, format: &str) -> Result<String, Error> {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (tod / 3600, tod / 60 % 60, tod % 60);
    let wd = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - {
        let jan1 = |y: i64| {
            // days of y-01-01: inverse of civil_from_days for m=1, d=1
            let y = y - 1;
            let era = y.div_euclid(400);
            let yoe = y.rem_euclid(400);
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + 306;
            era * 146_097 + doe - 719_468
        };
        jan1(y)
    } + 1;
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let no_pad = spec == Some('-');
        if no_pad {
            spec = chars.next();
        }
        let num = |v: i64, width: usize| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:0width$}")
            }
        };
        match spec {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&num(y.rem_euclid(100), 2)),
            Some('m') => out.push_str(&num(m as i64, 2)),
            Some('d') => out.push_str(&num(d as i64, 2)),
            Some('e') => out.push_str(&format!("{d:>2}")),
            Some('b') | Some('h') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&DAYS[wd][..3]),
            Some('A') => out.push_str(DAYS[wd]),
            Some('H') => out.push_str(&num(hh, 2)),
            Some('I') => out.push_str(&num((hh + 11) % 12 + 1, 2)),
            Some('M') => out.push_str(&num(mm, 2)),
            Some('S') => out.push_str(&num(ss, 2)),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&num(yday, 3)),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: directive %{} is not supported",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(src: &str) -> String {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", |v: JValue, k: Kwargs| -> Result<String, Error> {
            let o = JsonOptions::from_kwargs(&k)?;
            k.assert_all_used()?;
            let mut out = String::new();
            py_json(&v, &o, 0, &mut out)?;
            Ok(out)
        });
        env.render_str(src, minijinja::context! {}).unwrap()
    }

    /// Expected strings are what python 3.11's json.dumps prints for the same values.
    #[test]
    fn tojson_matches_python_json_dumps() {
        assert_eq!(
            dumps("{{ {'a': [true, 'é\\n', none, 1.5], 'b': 1} | tojson }}"),
            r#"{"a": [true, "é\n", null, 1.5], "b": 1}"#
        );
        assert_eq!(dumps("{{ [1] | tojson(indent=2) }}"), "[\n  1\n]");
        assert_eq!(
            dumps("{{ {'b': 1, 'a': {'c': []}} | tojson(indent=2, sort_keys=true) }}"),
            "{\n  \"a\": {\n    \"c\": []\n  },\n  \"b\": 1\n}"
        );
        assert_eq!(
            dumps("{{ {'a': 1, 'b': [1, 2]} | tojson(separators=(',', ':')) }}"),
            r#"{"a":1,"b":[1,2]}"#
        );
        assert_eq!(
            dumps("{{ 'é😀' | tojson(ensure_ascii=true) }}"),
            r#""\u00e9\ud83d\ude00""#
        );
    }

    #[test]
    fn floats_print_as_python_repr() {
        for (f, py) in [
            (1.5, "1.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (-2.5e-7, "-2.5e-07"),
            (0.1 + 0.2, "0.30000000000000004"),
            (100.0, "100.0"),
        ] {
            assert_eq!(py_float_repr(f), py, "{f}");
        }
    }

    #[test]
    fn strip_uses_python_whitespace() {
        // '\x1f a\xa0'.strip() == 'a' in python; Rust's trim keeps \x1f.
        assert_eq!(trim_filter(JValue::from("\x1f a\u{a0}"), None), "a");
        assert_eq!(trim_filter(JValue::from("\u{200b}a"), None), "\u{200b}a");
        assert_eq!(trim_filter(JValue::from("xxaxx"), Some("x".into())), "a");
    }

    #[test]
    fn strftime_formats_like_c() {
        // 2024-07-26 13:25:09 UTC = 1722000309 (date -u -d @1722000309)
        let t = 1_722_000_309;
        assert_eq!(strftime(t, "%d %b %Y").unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime(t, "%A %B %-d, %y %H:%M:%S %p %j").unwrap(),
            "Friday July 26, 24 13:25:09 PM 208"
        );
        assert!(strftime(t, "%Q").is_err());
    }
}
