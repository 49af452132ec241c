//! FunCodec's `codecs.txt`: one line per utterance, the utterance id, one space, then Python's
//! `json.dumps` of the codes as a `[segment][quantizer][frame]` list with default `", "` separators:
//!
//! ```text
//! utt1 [[[721, 767, 3], [454, 671, 9]]]
//! ```
//!
//! The runtime handles one segment per utterance (FunCodec's default), so entries hold `[n_q][T]`.
//! Writing is byte-identical to FunCodec; reading also accepts any whitespace inside the list.

use std::fmt::{self, Write as _};

/// One utterance of a `codecs.txt` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecsEntry {
    pub utt_id: String,
    /// Codes as `[n_q][T]`: one row per quantizer, all rows the same length.
    pub codes: Vec<Vec<u16>>,
}

/// Formats one line exactly like FunCodec's `f"{uttid} {json.dumps(codes)}"`, without a newline.
/// `utt_id` should hold no whitespace, or the line will not parse back.
pub fn format_line(utt_id: &str, codes: &[Vec<u16>]) -> String {
    // Up to 5 digits and ", " per code.
    let mut line = String::with_capacity(
        utt_id.len() + 8 + codes.iter().map(|r| 4 + 7 * r.len()).sum::<usize>(),
    );
    line.push_str(utt_id);
    line.push_str(" [[");
    for (q, row) in codes.iter().enumerate() {
        if q > 0 {
            line.push_str(", ");
        }
        line.push('[');
        for (t, code) in row.iter().enumerate() {
            if t > 0 {
                line.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = write!(line, "{code}");
        }
        line.push(']');
    }
    line.push_str("]]");
    line
}

/// Parses one line: the id up to the first whitespace, then a single-segment code list.
pub fn parse_line(line: &str) -> Result<CodecsEntry, CodecsTxtError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('[') {
        return Err(CodecsTxtError::MissingUttId);
    }
    let Some((utt_id, rest)) = line.split_once(char::is_whitespace) else {
        return Err(CodecsTxtError::MissingCodes {
            utt_id: line.to_owned(),
        });
    };
    // Columns in errors are 1-based byte positions within the trimmed line.
    let mut p = Parser {
        text: rest,
        pos: 0,
        base: line.len() - rest.len(),
    };
    let parsed = p
        .list(|p| p.list(|p| p.list(Parser::code)))
        .and_then(|segments| {
            p.skip_ws();
            if p.pos < p.text.len() {
                Err(p.unexpected("end of line"))
            } else {
                Ok(segments)
            }
        });
    let with_id = |kind| CodecsTxtError::Parse {
        utt_id: utt_id.to_owned(),
        kind,
    };
    let mut segments = parsed.map_err(with_id)?;
    if segments.len() != 1 {
        return Err(with_id(ParseErrorKind::Segments {
            found: segments.len(),
        }));
    }
    let codes = segments.swap_remove(0);
    if let Some(first) = codes.first() {
        let expected = first.len();
        if let Some((quantizer, row)) = codes.iter().enumerate().find(|(_, r)| r.len() != expected)
        {
            return Err(with_id(ParseErrorKind::RaggedRows {
                quantizer,
                len: row.len(),
                expected,
            }));
        }
    }
    Ok(CodecsEntry {
        utt_id: utt_id.to_owned(),
        codes,
    })
}

/// Parses a whole `codecs.txt`, skipping blank lines; errors name the 1-based line.
pub fn read_codecs_txt(text: &str) -> Result<Vec<CodecsEntry>, CodecsTxtError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(l).map_err(|e| CodecsTxtError::Line {
                line: i + 1,
                source: Box::new(e),
            })
        })
        .collect()
}

/// Formats entries as FunCodec writes them, one `'\n'`-terminated line each.
pub fn write_codecs_txt(entries: &[CodecsEntry]) -> String {
    entries.iter().fold(String::new(), |mut out, e| {
        out.push_str(&format_line(&e.utt_id, &e.codes));
        out.push('\n');
        out
    })
}

/// Hand-written parser for nested lists of non-negative integers.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Offset of `text` within the line, for error columns.
    base: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.as_bytes().get(self.pos).copied()
    }

    fn column(&self) -> usize {
        self.base + self.pos + 1
    }

    fn unexpected(&self, expected: &'static str) -> ParseErrorKind {
        // `pos` only ever moves past ASCII or whole whitespace characters, so it is a char boundary.
        let found = self.text.get(self.pos..).and_then(|r| r.chars().next());
        ParseErrorKind::Syntax {
            column: self.column(),
            expected,
            found,
        }
    }

    /// `[item, item, ...]`, possibly empty.
    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseErrorKind>,
    ) -> Result<Vec<T>, ParseErrorKind> {
        if self.peek() != Some(b'[') {
            return Err(self.unexpected("'['"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.unexpected("',' or ']'")),
            }
        }
    }

    fn code(&mut self) -> Result<u16, ParseErrorKind> {
        match self.peek() {
            Some(b'-') => {
                return Err(ParseErrorKind::Negative {
                    column: self.column(),
                });
            }
            Some(b'0'..=b'9') => {}
            _ => return Err(self.unexpected("a code (non-negative integer)")),
        }
        let start = self.pos;
        let digits = self.text[start..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        self.pos += digits;
        let text = &self.text[start..self.pos];
        // Any digit run too long for u16 (including ones too long for u64) is out of range.
        text.parse::<u16>()
            .map_err(|_| ParseErrorKind::ValueTooLarge {
                column: self.base + start + 1,
                value: text.to_owned(),
            })
    }
}

/// What is wrong with a line's code list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    Syntax {
        column: usize,
        expected: &'static str,
        found: Option<char>,
    },
    Negative {
        column: usize,
    },
    ValueTooLarge {
        column: usize,
        value: String,
    },
    Segments {
        found: usize,
    },
    RaggedRows {
        quantizer: usize,
        len: usize,
        expected: usize,
    },
}

/// A `codecs.txt` line or file that cannot be read.
///
/// `MissingUttId`: the line is empty or starts with the code list. `MissingCodes`: nothing follows
/// the id. `Line` wraps an error from [`read_codecs_txt`] with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecsTxtError {
    MissingUttId,
    MissingCodes {
        utt_id: String,
    },
    Parse {
        utt_id: String,
        kind: ParseErrorKind,
    },
    Line {
        line: usize,
        source: Box<CodecsTxtError>,
    },
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::Syntax {
                column,
                expected,
                found,
            } => {
                write!(f, "column {column}: expected {expected}, found ")?;
                match found {
                    Some(c) => write!(f, "{c:?}")?,
                    None => write!(f, "end of line")?,
                }
                write!(f, " (codes must be a [1][n_q][T] list of integers)")
            }
            ParseErrorKind::Negative { column } => write!(f, "column {column}: negative code"),
            ParseErrorKind::ValueTooLarge { column, value } => {
                write!(f, "column {column}: code {value} is larger than 65535")
            }
            ParseErrorKind::Segments { found } => {
                write!(
                    f,
                    "{found} segments; segmented FunCodec output is not supported (expected exactly one segment, [1][n_q][T])"
                )
            }
            ParseErrorKind::RaggedRows {
                quantizer,
                len,
                expected,
            } => {
                write!(
                    f,
                    "quantizer {quantizer} has {len} frames, quantizer 0 has {expected}"
                )
            }
        }
    }
}

impl fmt::Display for CodecsTxtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecsTxtError::MissingUttId => write!(
                f,
                "missing utterance id (a line must be `<uttid> [[[codes...]]]`)"
            ),
            CodecsTxtError::MissingCodes { utt_id } => {
                write!(f, "utterance {utt_id}: no code list after the id")
            }
            CodecsTxtError::Parse { utt_id, kind } => write!(f, "utterance {utt_id}: {kind}"),
            CodecsTxtError::Line { line, source } => write!(f, "line {line}: {source}"),
        }
    }
}

// Messages already include their causes, so `source()` stays `None` to avoid printing them twice.
impl std::error::Error for CodecsTxtError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(line: &str) -> ParseErrorKind {
        match parse_line(line) {
            Err(CodecsTxtError::Parse { kind, .. }) => kind,
            other => panic!("{line:?}: expected a parse error, got {other:?}"),
        }
    }

    fn syntax(column: usize, expected: &'static str, found: Option<char>) -> ParseErrorKind {
        ParseErrorKind::Syntax {
            column,
            expected,
            found,
        }
    }

    #[test]
    fn formats_like_python_json_dumps() {
        assert_eq!(
            format_line("u", &[vec![1, 2, 3], vec![4, 5, 6]]),
            "u [[[1, 2, 3], [4, 5, 6]]]"
        );
        assert_eq!(
            format_line("utt1", &[vec![721, 767, 3], vec![454, 671, 9]]),
            "utt1 [[[721, 767, 3], [454, 671, 9]]]"
        );
        assert_eq!(format_line("u", &[vec![], vec![]]), "u [[[], []]]");
        assert_eq!(format_line("u", &[]), "u [[]]");
        assert_eq!(
            format_line("x", &[vec![0], vec![65535], vec![1023]]),
            "x [[[0], [65535], [1023]]]"
        );
    }

    #[test]
    fn parses_what_it_formats() {
        for codes in [
            vec![vec![1, 2, 3], vec![4, 5, 6]],
            vec![vec![], vec![]],
            vec![],
            vec![vec![0, 65535]],
        ] {
            let line = format_line("spk1-utt_2", &codes);
            assert_eq!(
                parse_line(&line),
                Ok(CodecsEntry {
                    utt_id: "spk1-utt_2".into(),
                    codes
                })
            );
        }
    }

    #[test]
    fn parses_odd_whitespace() {
        let want = CodecsEntry {
            utt_id: "u".into(),
            codes: vec![vec![1, 2], vec![3, 4]],
        };
        for line in [
            "u [[[1,2],[3,4]]]",
            "  u \t [ [ [1 ,2 ] ,[3,\t4]]]  \r",
            "u\t[[[1,\n 2], [3, 4]\n]]\n",
            "u  [[[01, 2], [3, 4]]]",
        ] {
            assert_eq!(parse_line(line), Ok(want.clone()), "{line:?}");
        }
    }

    #[test]
    fn rejects_multiple_segments() {
        let err = parse_line("u [[[1, 2]], [[3, 4]]]").unwrap_err();
        assert_eq!(
            err,
            CodecsTxtError::Parse {
                utt_id: "u".into(),
                kind: ParseErrorKind::Segments { found: 2 }
            }
        );
        assert_eq!(
            err.to_string(),
            "utterance u: 2 segments; segmented FunCodec output is not supported (expected exactly one segment, [1][n_q][T])"
        );
        assert_eq!(parse_err("u []"), ParseErrorKind::Segments { found: 0 });
    }

    #[test]
    fn rejects_ragged_rows() {
        let err = parse_line("u [[[1, 2], [3, 4], [5]]]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "utterance u: quantizer 2 has 1 frames, quantizer 0 has 2"
        );
        assert_eq!(
            err,
            CodecsTxtError::Parse {
                utt_id: "u".into(),
                kind: ParseErrorKind::RaggedRows {
                    quantizer: 2,
                    len: 1,
                    expected: 2
                }
            }
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(
            parse_err("u [[[1, -2]]]"),
            ParseErrorKind::Negative { column: 9 }
        );
        assert_eq!(
            parse_line("u [[[1, -2]]]").unwrap_err().to_string(),
            "utterance u: column 9: negative code"
        );
        assert_eq!(
            parse_err("u [[[65536]]]"),
            ParseErrorKind::ValueTooLarge {
                column: 6,
                value: "65536".into()
            }
        );
        let big = "99999999999999999999999";
        assert_eq!(
            parse_err(&format!("u [[[{big}]]]")),
            ParseErrorKind::ValueTooLarge {
                column: 6,
                value: big.into()
            }
        );
        assert_eq!(parse_line("u [[[65535]]]").unwrap().codes, [[65535]]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_err("u hello"), syntax(3, "'['", Some('h')));
        assert_eq!(parse_err("u [[[1, 2]]"), syntax(12, "',' or ']'", None));
        assert_eq!(
            parse_err("u [[[1]]] x"),
            syntax(11, "end of line", Some('x'))
        );
        assert_eq!(parse_err("u [[[1.5]]]"), syntax(7, "',' or ']'", Some('.')));
        assert_eq!(parse_err("u [[1, 2]]"), syntax(5, "'['", Some('1')));
        assert_eq!(
            parse_err("u [[[[1]]]]"),
            syntax(6, "a code (non-negative integer)", Some('['))
        );
        assert_eq!(
            parse_err("u [[[1,]]]"),
            syntax(8, "a code (non-negative integer)", Some(']'))
        );
        assert_eq!(
            parse_err("u [[[é]]]"),
            syntax(6, "a code (non-negative integer)", Some('é'))
        );
        assert_eq!(
            parse_line("u [[[1 2]]]").unwrap_err().to_string(),
            "utterance u: column 8: expected ',' or ']', found '2' (codes must be a [1][n_q][T] list of integers)"
        );
    }

    #[test]
    fn rejects_missing_id_or_codes() {
        assert_eq!(parse_line("[[[1, 2]]]"), Err(CodecsTxtError::MissingUttId));
        assert_eq!(
            parse_line("  [[[1, 2]]]"),
            Err(CodecsTxtError::MissingUttId)
        );
        assert_eq!(parse_line(""), Err(CodecsTxtError::MissingUttId));
        assert_eq!(
            parse_line("utt7"),
            Err(CodecsTxtError::MissingCodes {
                utt_id: "utt7".into()
            })
        );
        assert_eq!(
            parse_line("utt7   "),
            Err(CodecsTxtError::MissingCodes {
                utt_id: "utt7".into()
            })
        );
        assert_eq!(
            parse_line("utt7").unwrap_err().to_string(),
            "utterance utt7: no code list after the id"
        );
    }

    #[test]
    fn reads_files_skipping_blank_lines() {
        let text = "a [[[1]]]\r\n\r\n   \nb [[[2, 3], [4, 5]]]\n";
        let want = vec![
            CodecsEntry {
                utt_id: "a".into(),
                codes: vec![vec![1]],
            },
            CodecsEntry {
                utt_id: "b".into(),
                codes: vec![vec![2, 3], vec![4, 5]],
            },
        ];
        assert_eq!(read_codecs_txt(text), Ok(want));
        assert_eq!(read_codecs_txt(""), Ok(vec![]));
    }

    #[test]
    fn file_errors_name_the_line() {
        let err = read_codecs_txt("a [[[1]]]\n\nb [[[1], [2, 3]]]\n").unwrap_err();
        let source = Box::new(CodecsTxtError::Parse {
            utt_id: "b".into(),
            kind: ParseErrorKind::RaggedRows {
                quantizer: 1,
                len: 2,
                expected: 1,
            },
        });
        assert_eq!(err, CodecsTxtError::Line { line: 3, source });
        assert_eq!(
            err.to_string(),
            "line 3: utterance b: quantizer 1 has 2 frames, quantizer 0 has 1"
        );
        let err = read_codecs_txt("a [[[1]]]\n[[[2]]]").unwrap_err();
        assert_eq!(
            err,
            CodecsTxtError::Line {
                line: 2,
                source: Box::new(CodecsTxtError::MissingUttId)
            }
        );
    }

    #[test]
    fn writes_files_like_funcodec() {
        let entries = vec![
            CodecsEntry {
                utt_id: "a".into(),
                codes: vec![vec![1, 2]],
            },
            CodecsEntry {
                utt_id: "b".into(),
                codes: vec![vec![], vec![]],
            },
        ];
        let text = write_codecs_txt(&entries);
        assert_eq!(text, "a [[[1, 2]]]\nb [[[], []]]\n");
        assert_eq!(read_codecs_txt(&text), Ok(entries));
        assert_eq!(write_codecs_txt(&[]), "");
    }
}
