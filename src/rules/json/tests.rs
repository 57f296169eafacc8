use super::*;
use serde::de::IgnoredAny;

/// serde_json's own nesting limit, which the differential tests compare against.
const MAX_DEPTH: usize = 128;
const STRICT: Syntax = Syntax {
    dialect: JsonDialect::Strict,
    max_depth: MAX_DEPTH,
};

/// What the paths (dotted, as in a rule) reach.
fn reach(paths: &[&str]) -> Reach {
    let mut reach = Reach::default();
    for p in paths {
        reach.add(crate::rules::path::FieldPath::parse(p).unwrap().segments());
    }
    reach
}

/// Every value down to `depth` levels: a path of `depth` `*`s.
fn everything(depth: usize) -> Reach {
    reach(&[&vec!["*"; depth].join(".")])
}

/// The outline of `src` as `reach` records it, and the span of its top-level value.
fn outline_of<'a>(src: &'a str, reach: &Reach) -> (Outline<'a>, Option<(usize, usize)>) {
    let mut outline = Outline::new();
    let span = match parse(src, reach, &mut outline, STRICT) {
        Parsed::Object { start } => Some((start, src.trim_end().len())),
        Parsed::Other => None,
        Parsed::NotJson | Parsed::TooDeep => panic!("not JSON: {src}"),
    };
    (outline, span)
}

fn outline(src: &str, depth: usize) -> (Outline<'_>, Option<(usize, usize)>) {
    outline_of(src, &everything(depth))
}

fn top(src: &str) -> (Option<usize>, Vec<Member<'_>>) {
    let (outline, span) = outline(src, 1);
    let members = span.map_or_else(Vec::new, |(start, end)| {
        outline.children(start, end).collect()
    });
    (span.map(|s| s.0), members)
}

fn serde_accepts(src: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(src).is_ok() && !too_deep(src.as_bytes(), MAX_DEPTH)
}

fn we_accept(src: &str) -> bool {
    accepts(src, STRICT)
}

fn accepts(src: &str, syntax: Syntax) -> bool {
    // Recording as deep as the document goes must not change the verdict.
    let verdict = |reach: &Reach| {
        !matches!(
            parse(src, reach, &mut Outline::new(), syntax),
            Parsed::NotJson | Parsed::TooDeep
        )
    };
    let shallow = verdict(&Reach::default());
    assert_eq!(
        shallow,
        verdict(&everything(syntax.max_depth.min(2000))),
        "{src:?}"
    );
    shallow
}

fn python(max_depth: usize) -> Syntax {
    Syntax {
        dialect: JsonDialect::Python,
        max_depth,
    }
}

/// What Python 3.11's `json.loads` says of each (checked with the local `python3`).
#[test]
fn the_python_dialect_reads_non_finite_numbers_as_values_only() {
    let ok = [
        "NaN",
        "Infinity",
        "-Infinity",
        " [NaN, Infinity,-Infinity] ",
        r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585","score":NaN}"#,
        r#"{"a":{"b":[1,NaN]},"c":-Infinity}"#,
        "[1e400,-0,NaN]",
    ];
    let bad = [
        "-NaN",
        "+NaN",
        "+Infinity",
        "Infinityx",
        "NaNx",
        "nan",
        "inf",
        "-inf",
        "Infinit",
        "-Infinit",
        "[Infinity1]",
        "[NaN NaN]",
        "{NaN:1}",
        "{Infinity:1}",
        "--Infinity",
        "-",
        "N",
        "I",
    ];
    for src in ok {
        assert!(accepts(src, python(MAX_DEPTH)), "python rejects {src:?}");
        assert!(!we_accept(src), "strict accepts {src:?}");
    }
    for src in bad {
        assert!(!accepts(src, python(MAX_DEPTH)), "python accepts {src:?}");
        assert!(!we_accept(src), "strict accepts {src:?}");
    }
    // Everything strict JSON accepts, the Python dialect accepts too.
    for src in ["[1,2]", r#"{"NaN":"Infinity"}"#, "-0.5e-3", "null"] {
        assert!(we_accept(src) && accepts(src, python(MAX_DEPTH)), "{src:?}");
    }
    // Outlined like any number.
    let src = r#"{"score":NaN,"n":-Infinity,"t":"x"}"#;
    let mut outline = Outline::new();
    assert!(matches!(
        parse(src, &everything(1), &mut outline, python(MAX_DEPTH)),
        Parsed::Object { start: 0 }
    ));
    let raws: Vec<_> = outline.members(outline.top()).map(|m| m.raw()).collect();
    assert_eq!(raws, ["NaN", "-Infinity", "\"x\""]);
    assert!(is_non_finite("NaN") && is_non_finite("-Infinity") && !is_non_finite("-1"));
}

#[test]
fn the_depth_limit_is_configurable_and_needs_no_recursion() {
    let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = |n: usize| format!("{}NaN{}", "{\"a\":".repeat(n), "}".repeat(n));
    let mixed = |n: usize| format!("{}1{}", "[{\"a\":".repeat(n / 2), "}]".repeat(n / 2));
    for limit in [1, 63, 64, 65, 127, 128, 129, 1000, 5000] {
        let syntax = python(limit);
        for make in [&arrays as &dyn Fn(usize) -> String, &objects] {
            assert!(accepts(&make(limit), syntax), "{limit}");
            let mut outline = Outline::new();
            assert!(
                matches!(
                    parse(&make(limit + 1), &Reach::default(), &mut outline, syntax),
                    Parsed::TooDeep
                ),
                "{limit}"
            );
        }
        if limit % 2 == 0 {
            assert!(accepts(&mixed(limit), syntax) && !accepts(&mixed(limit + 2), syntax));
        }
    }
    // Levels past the first words keep their kinds: a closing bracket of the wrong kind
    // deep down is still refused, and the right one deep down still accepted.
    let deep = 3000;
    let open = "[{\"a\":".repeat(deep);
    let good = format!("{open}1{}", "}]".repeat(deep));
    assert!(accepts(&good, python(2 * deep)));
    // At level 400, an object is closed with `]`.
    let wrong = format!("{open}1{}]{}", "}]".repeat(deep - 200), "}]".repeat(200));
    assert!(!accepts(&wrong, python(2 * deep)));
    // Recorded levels past 128 are found again on the way out.
    let path = vec!["a"; 200].join(".");
    let src = format!("{}1{},\"b\":2}}", "{\"a\":".repeat(201), "}".repeat(200));
    let mut outline = Outline::new();
    assert!(matches!(
        parse(&src, &reach(&[&path, "b"]), &mut outline, python(1000)),
        Parsed::Object { start: 0 }
    ));
    let top: Vec<_> = outline
        .members(outline.top())
        .map(|m| m.key_raw())
        .collect();
    assert_eq!(top, ["\"a\"", "\"b\""]);
}

#[test]
fn top_members_and_offsets() {
    let src =
        r#"  {"a" : 1, "b\u0065":{"x":[1,"]}\"",2]} ,"c":"s\\" , "d":-1.5e3,"e":[],"f":{}}  "#;
    let (span, m) = top(src);
    assert_eq!(span, Some(2));
    let got: Vec<_> = m
        .iter()
        .map(|m| {
            (
                unescape(m.key_raw()).unwrap().into_owned(),
                m.raw(),
                &src[m.start()..m.end()],
                &src[m.key_start()..m.key_start() + m.key_raw().len()],
            )
        })
        .collect();
    let want: Vec<(String, &str, &str, &str)> = vec![
        ("a".into(), "1", "1", "\"a\""),
        (
            "be".into(),
            r#"{"x":[1,"]}\"",2]}"#,
            r#"{"x":[1,"]}\"",2]}"#,
            r#""b\u0065""#,
        ),
        ("c".into(), r#""s\\""#, r#""s\\""#, "\"c\""),
        ("d".into(), "-1.5e3", "-1.5e3", "\"d\""),
        ("e".into(), "[]", "[]", "\"e\""),
        ("f".into(), "{}", "{}", "\"f\""),
    ];
    assert_eq!(got, want);
    assert!(m[0].key_is("a") && !m[0].key_escaped());
    assert!(m[1].key_is("be") && m[1].key_escaped() && !m[1].key_is("b\\u0065"));
    assert!(!m[0].key_is("ab"));
}

#[test]
fn many_members_spill_to_the_heap() {
    let body: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let src = format!("{{{}}}", body.join(","));
    let (_, m) = top(&src);
    assert_eq!(m.len(), 40);
    assert!(m
        .iter()
        .enumerate()
        .all(|(i, m)| m.key_is(&format!("k{i}")) && m.raw() == i.to_string()));
}

#[test]
fn nested_members_and_elements_down_to_the_recorded_depth() {
    let src = r#"{"arr":[ 1 , "a,]" ,{"k":[2]}, [ ] ,null,true], "o":{"k":{"deep":1}},"e":{}}"#;
    fn texts<'a>(o: &Outline<'a>, start: usize, end: usize) -> Vec<(&'a str, &'a str)> {
        o.children(start, end)
            .map(|m| (m.key_raw(), m.raw()))
            .collect()
    }
    let (o, span) = outline(src, 2);
    let (start, end) = span.unwrap();
    let top = texts(&o, start, end);
    assert_eq!(
        top.iter().map(|m| m.0).collect::<Vec<_>>(),
        [r#""arr""#, r#""o""#, r#""e""#]
    );
    let arr = o.children(start, end).next().unwrap();
    assert_eq!(
        texts(&o, arr.start(), arr.end()),
        [
            ("", "1"),
            ("", r#""a,]""#),
            ("", r#"{"k":[2]}"#),
            ("", "[ ]"),
            ("", "null"),
            ("", "true")
        ]
    );
    let obj = o.children(start, end).nth(1).unwrap();
    assert_eq!(
        texts(&o, obj.start(), obj.end()),
        [(r#""k""#, r#"{"deep":1}"#)]
    );
    // Depth 3 is not recorded: nothing inside `{"k":[2]}` or `{"deep":1}`.
    let inner = o.children(arr.start(), arr.end()).nth(2).unwrap();
    assert!(texts(&o, inner.start(), inner.end()).is_empty());
    let empty = o.children(start, end).nth(2).unwrap();
    assert!(texts(&o, empty.start(), empty.end()).is_empty());

    let (o, _) = outline(src, 3);
    let deep = o.children(start, end).nth(1).unwrap();
    let k = o.children(deep.start(), deep.end()).next().unwrap();
    assert_eq!(texts(&o, k.start(), k.end()), [(r#""deep""#, "1")]);
    let inner = o.children(arr.start(), arr.end()).nth(2).unwrap();
    assert_eq!(texts(&o, inner.start(), inner.end()), [(r#""k""#, "[2]")]);
}

#[test]
fn only_containers_a_path_goes_through_are_outlined() {
    let src = r#"{"a":{"x":1,"y":{"z":2}},"b":{"x":3},"list":[{"x":4},{"x":5}],"n":[1,2,3]}"#;
    let keys = |o: &Outline<'_>, m: &Member<'_>| -> Vec<String> {
        o.children(m.start(), m.end())
            .map(|c| c.key_raw().to_string())
            .collect()
    };
    let (o, span) = outline_of(src, &reach(&["a.x", "list.1.x", "type"]));
    let (start, end) = span.unwrap();
    let top: Vec<_> = o.children(start, end).collect();
    assert_eq!(top.len(), 4);
    assert_eq!(keys(&o, &top[0]), [r#""x""#, r#""y""#]);
    // `a.x` ends at `x`: nothing inside `y`; nothing inside `b` or `n`'s elements either.
    let y = o.children(top[0].start(), top[0].end()).nth(1).unwrap();
    assert!(keys(&o, &y).is_empty());
    assert!(keys(&o, &top[1]).is_empty());
    // An index segment: every element of `list` is outlined (and what is inside them).
    let elements: Vec<_> = o.children(top[2].start(), top[2].end()).collect();
    assert_eq!(elements.len(), 2);
    assert_eq!(keys(&o, &elements[1]), [r#""x""#]);
    // `n` is an array no path enters: its elements are not recorded.
    assert_eq!(o.children(top[3].start(), top[3].end()).count(), 0);
    // A top-level array is not outlined: the rules look only into objects.
    let (o, span) = outline_of("[1,2,3]", &everything(2));
    assert!(span.is_none() && o.entries.is_empty());
    // The same document with no path: nothing is recorded, and it is still validated.
    let (o, _) = outline_of(src, &Reach::default());
    assert_eq!(o.entries.len(), 0);
}

#[test]
fn a_large_array_no_path_enters_costs_no_entries() {
    let numbers: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    let src = format!(
        r#"{{"type":"x","data":[{}],"payload":{{"timestamp":1}}}}"#,
        numbers.join(",")
    );
    let (o, _) = outline_of(&src, &reach(&["timestamp", "payload.timestamp", "type"]));
    // The three top-level members and `payload`'s one.
    assert_eq!(o.entries.len(), 4);
}

#[test]
fn an_outline_past_its_inline_room_spills_to_the_heap_in_order() {
    let items: Vec<String> = (0..40).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    let src = format!(r#"{{"list":[{}],"after":true}}"#, items.join(","));
    let (o, span) = outline(&src, 3);
    let (start, end) = span.unwrap();
    let top: Vec<_> = o.children(start, end).collect();
    assert_eq!(top.len(), 2);
    assert!(top[1].key_is("after") && top[1].raw() == "true");
    let elements: Vec<_> = o.children(top[0].start(), top[0].end()).collect();
    assert_eq!(elements.len(), 40);
    for (i, e) in elements.iter().enumerate() {
        let n: Vec<_> = o.children(e.start(), e.end()).map(|m| m.raw()).collect();
        assert_eq!(n, [i.to_string()]);
    }
}

#[test]
fn validation_matches_serde_json() {
    let ok = [
        "[1,2]",
        "1",
        "\"s\"",
        "null",
        "true",
        "false",
        " 1.5e3 ",
        "{}",
        "[]",
        " [ ] ",
        "{ }",
        "{\"a\":{\"b\":[1,{}]}}",
        "-0",
        "0.5",
        "-1.5E+3",
        "1e-3",
        "0e0",
        "123456789012345678901234567890",
        "\"\\u00e9\\ud800\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"é😀\"",
        "{\"a\":1,\"a\":2}",
        "\t\n\r {\"a\" : [ 1 , 2 ] }\n",
        "1e999",
        "[[[[]]]]",
        "{\"\":\"\"}",
        "\"\\u0000\"",
        "\"abcdefghijklmnopqrstuvwxyz\\\"0123456789\"",
    ];
    let bad = [
        "",
        " ",
        "{",
        "}",
        "[",
        "]",
        "{\"a\":}",
        "{} x",
        "[1,]",
        "{\"a\":1,}",
        "nul",
        "nulll",
        "tru",
        "{'a':1}",
        "{\"a\":\"\\q\"}",
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "--1",
        "0x10",
        "NaN",
        "Infinity",
        "\"abc",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"a\u{1}b\"",
        "\"tab\there\"",
        "{1:2}",
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "[1 2]",
        "[1,,2]",
        "{,}",
        "[,]",
        "{\"a\"}",
        "\u{feff}{}",
        "{\"a\":[}",
        "{\"a\":{]}",
        "[}",
        "{]",
        "1 2",
        "\"\\\"",
        "\"abcdefghijklmnop\\",
        "\"abcdefgh\u{1f}ijklmnop\"",
    ];
    for src in ok {
        assert!(serde_accepts(src), "oracle rejects {src:?}");
        assert!(we_accept(src), "we reject {src:?}");
    }
    for src in bad {
        assert!(!serde_accepts(src), "oracle accepts {src:?}");
        assert!(!we_accept(src), "we accept {src:?}");
    }
    // depth: 128 levels are fine, 129 are not
    let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(we_accept(&at(128)) && !we_accept(&at(129)) && !we_accept(&at(100_000)));
    let obj = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    assert!(we_accept(&obj(128)) && !we_accept(&obj(129)));
}

/// Random JSON-ish text: our validator and serde_json agree on every input.
#[test]
fn validation_differential() {
    let alphabet: &[&str] = &[
        "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "\\", "\\u", "00e9", "\\n", "-", "+", ".",
        "e", "E", "0", "1", "9", "12", "true", "false", "null", "nul", "a", "é", "\u{1}", "\"k\":",
        "\"s\"", "1.5",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for _ in 0..200_000 {
        let len = 1 + next() % 12;
        let src: String = (0..len)
            .map(|_| alphabet[(next() as usize) % alphabet.len()])
            .collect();
        let (ours, theirs) = (we_accept(&src), serde_accepts(&src));
        assert_eq!(ours, theirs, "disagree on {src:?}");
        accepted += usize::from(ours);
    }
    assert!(accepted > 1000, "too few valid samples: {accepted}");
}

/// Strings long enough for the 16- and 8-byte scans, with a quote, an escape, a control
/// character or a multi-byte character at every offset: the same verdict and end as serde's.
#[test]
fn string_scans_find_every_special_byte() {
    let specials = [
        "\"", "\\n", "\\u00e9", "\u{1}", "\u{1f}", "\u{7f}", " ", "é", "😀", "\\",
    ];
    for len in 0..48 {
        for at in 0..len {
            for special in specials {
                let body: String = (0..len)
                    .map(|i| {
                        if i == at {
                            special.to_owned()
                        } else {
                            "a".to_owned()
                        }
                    })
                    .collect();
                let src = format!("{{\"k\":\"{body}\",\"n\":1}}");
                assert_eq!(we_accept(&src), serde_accepts(&src), "{src:?}");
            }
        }
        // With no special byte, the string ends at its quote, wherever the scan stops.
        let body = "x".repeat(len);
        let src = format!("{{\"k\":\"{body}\",\"n\":1}}");
        let (_, m) = top(&src);
        assert_eq!(m[0].raw(), format!("\"{body}\""));
        assert!(m[1].key_is("n"));
    }
}

#[test]
fn member_spans_cover_keys() {
    let src = r#"{ "a" : 1 ,	"b":[2] , "c" :{} }"#;
    let (_, m) = top(src);
    let keys: Vec<_> = m.iter().map(|m| &src[m.key_start()..m.end()]).collect();
    assert_eq!(keys, vec![r#""a" : 1"#, r#""b":[2]"#, r#""c" :{}"#]);
}

#[test]
fn depth_check() {
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(!too_deep(ok.as_bytes(), MAX_DEPTH));
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(too_deep(deep.as_bytes(), MAX_DEPTH));
    let in_string = format!("{{\"a\":\"{}\"}}", "[{".repeat(1000));
    assert!(!too_deep(in_string.as_bytes(), MAX_DEPTH));
    let escaped = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(1000));
    assert!(!too_deep(escaped.as_bytes(), MAX_DEPTH));
    assert_eq!(count_openers("[{x}]{".repeat(1000).as_bytes()), 3000);
}

#[test]
fn unescaping() {
    assert_eq!(unescape("\"abc\"").as_deref(), Some("abc"));
    assert_eq!(unescape("\"\\u00e9t\\u00e9\"").as_deref(), Some("été"));
    assert_eq!(unescape("\"\\ud800\"").as_deref(), None);
    assert_eq!(unescape("12").as_deref(), None);
    let mut out = Vec::new();
    push_json_string(&mut out, "a\"b\\é\n");
    assert_eq!(out, b"\"a\\\"b\\\\\xc3\xa9\\n\"");
}
