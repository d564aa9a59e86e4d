//! DynamoDB's number type (`N`), for the DynamoDB-compatible API: an exact
//! decimal of at most 38 significant digits, with magnitudes from 1E-130 to
//! just under 1E126 (and zero). Numbers are normalised, so `1`, `1.0`,
//! `+1` and `10E-1` are the same number, compare equal, print the same and
//! encode to the same bytes.
//!
//! * [`Number::parse`] checks the syntax, the precision and the range with
//!   errors worded as DynamoDB words them;
//! * `Ord` is numeric order;
//! * [`Number::key_bytes`] is an order-preserving encoding, so that sort
//!   keys of type N can be stored in numeric order;
//! * [`Number::checked_add`] and [`Number::neg`] serve `ADD` and `SET a =
//!   a + :v` (exact, or an error when the result leaves the type).

use std::cmp::Ordering;
use std::fmt;

/// The most significant digits a number may have.
pub const MAX_DIGITS: usize = 38;
/// The exponent (of the leading digit, in scientific notation) of the
/// smallest magnitude: 1E-130.
pub const MIN_EXP: i64 = -130;
/// The exponent of the largest magnitude: 9.99…E+125.
pub const MAX_EXP: i64 = 125;

/// Why a string is not a DynamoDB number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Not a number's syntax.
    #[error("The parameter cannot be converted to a numeric value: {0}")]
    Syntax(String),
    /// More than 38 significant digits.
    #[error("Attempting to store more than 38 significant digits in a Number")]
    Precision,
    /// Too large.
    #[error(
        "Number overflow. Attempting to store a number with magnitude larger than supported range"
    )]
    Overflow,
    /// Too small (and not zero).
    #[error(
        "Number underflow. Attempting to store a number with magnitude smaller than supported range"
    )]
    Underflow,
}

/// A DynamoDB number: `sign × 0.d₁d₂…dₙ × 10^exp`, with `d₁` and `dₙ`
/// non-zero (no digits: zero).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Number {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

impl Number {
    /// Zero.
    pub fn zero() -> Number {
        Number {
            negative: false,
            digits: Vec::new(),
            exp: 0,
        }
    }

    /// How many significant digits (0 for zero); DynamoDB's size of a
    /// number is about half of this plus one byte.
    pub fn significant_digits(&self) -> usize {
        self.digits.len()
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Builds a number from a sign, digits (any, leading and trailing
    /// zeros allowed) and the exponent of the position after the first
    /// digit, then normalises and checks it.
    fn normalised(
        negative: bool,
        mut digits: Vec<u8>,
        mut exp: i64,
    ) -> Result<Number, NumberError> {
        let lead = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..lead);
        exp -= lead as i64;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Ok(Number::zero());
        }
        // The leading digit's exponent in scientific notation is exp - 1.
        if exp - 1 > MAX_EXP {
            return Err(NumberError::Overflow);
        }
        if exp - 1 < MIN_EXP {
            return Err(NumberError::Underflow);
        }
        if digits.len() > MAX_DIGITS {
            return Err(NumberError::Precision);
        }
        Ok(Number {
            negative,
            digits,
            exp,
        })
    }

    /// Parses DynamoDB's number syntax: an optional sign, digits with an
    /// optional decimal point, an optional exponent (`e`/`E`, signed).
    pub fn parse(s: &str) -> Result<Number, NumberError> {
        let bad = || NumberError::Syntax(s.chars().take(64).collect());
        let b = s.as_bytes();
        let mut i = 0;
        let mut negative = false;
        if let Some(&c) = b.first()
            && (c == b'+' || c == b'-')
        {
            negative = c == b'-';
            i = 1;
        }
        let mut digits = Vec::new();
        let mut point: Option<usize> = None;
        while i < b.len() {
            match b[i] {
                d @ b'0'..=b'9' => digits.push(d - b'0'),
                b'.' if point.is_none() => point = Some(digits.len()),
                b'e' | b'E' => break,
                _ => return Err(bad()),
            }
            i += 1;
        }
        if digits.is_empty() {
            return Err(bad());
        }
        let mut exp10: i64 = 0;
        if i < b.len() {
            // An exponent: e, an optional sign, at least one digit.
            i += 1;
            let mut eneg = false;
            if let Some(&c) = b.get(i)
                && (c == b'+' || c == b'-')
            {
                eneg = c == b'-';
                i += 1;
            }
            if i >= b.len() {
                return Err(bad());
            }
            for &c in &b[i..] {
                if !c.is_ascii_digit() {
                    return Err(bad());
                }
                // Saturates far beyond any range check.
                exp10 = (exp10 * 10 + i64::from(c - b'0')).min(1 << 40);
            }
            if eneg {
                exp10 = -exp10;
            }
        }
        let int_digits = point.unwrap_or(digits.len()) as i64;
        let n = Number::normalised(negative, digits, int_digits + exp10)?;
        Ok(n)
    }

    /// The negation.
    pub fn neg(&self) -> Number {
        Number {
            negative: !self.negative && !self.is_zero(),
            ..self.clone()
        }
    }

    /// The exact sum, or an error when it leaves the type.
    pub fn checked_add(&self, other: &Number) -> Result<Number, NumberError> {
        if self.is_zero() {
            return Ok(other.clone());
        }
        if other.is_zero() {
            return Ok(self.clone());
        }
        // Align both coefficients on the smallest last-digit exponent.
        let last = |n: &Number| n.exp - n.digits.len() as i64;
        let low = last(self).min(last(other));
        let high = self.exp.max(other.exp);
        let width = (high - low) as usize;
        let spread = |n: &Number| -> Vec<u8> {
            let mut v = vec![0u8; width];
            let start = (high - n.exp) as usize;
            v[start..start + n.digits.len()].copy_from_slice(&n.digits);
            v
        };
        let (a, b) = (spread(self), spread(other));
        let (negative, digits) = if self.negative == other.negative {
            (self.negative, add_digits(&a, &b))
        } else {
            match a.cmp(&b) {
                Ordering::Equal => return Ok(Number::zero()),
                Ordering::Greater => (self.negative, sub_digits(&a, &b)),
                Ordering::Less => (other.negative, sub_digits(&b, &a)),
            }
        };
        // add_digits may have produced one more leading digit.
        let exp = high + (digits.len() as i64 - width as i64);
        Number::normalised(negative, digits, exp)
    }

    /// An encoding whose byte order is the numeric order.
    pub fn key_bytes(&self) -> Vec<u8> {
        if self.is_zero() {
            return vec![0x02];
        }
        // exp is within -129..=126 once normalised, so exp + 129 fits a byte.
        let e = (self.exp + 129).clamp(0, 255) as u8;
        let mut out = Vec::with_capacity(self.digits.len() + 3);
        if self.negative {
            out.push(0x01);
            out.push(255 - e);
            out.extend(self.digits.iter().map(|d| 10 - d));
            out.push(0xFF);
        } else {
            out.push(0x03);
            out.push(e);
            out.extend(self.digits.iter().map(|d| d + 1));
            out.push(0x00);
        }
        out
    }

    /// Decodes a number from the front of `raw` (written by
    /// [`Number::key_bytes`]); returns it and the bytes it took, or `None`
    /// when `raw` does not start with a valid encoding.
    pub fn from_key_bytes(raw: &[u8]) -> Option<(Number, usize)> {
        match *raw.first()? {
            0x02 => Some((Number::zero(), 1)),
            tag @ (0x01 | 0x03) => {
                let negative = tag == 0x01;
                let e = *raw.get(1)?;
                let e = if negative { 255 - e } else { e };
                let end = if negative { 0xFF } else { 0x00 };
                let len = raw.get(2..)?.iter().position(|b| *b == end)?;
                let digits = raw[2..2 + len]
                    .iter()
                    .map(|b| {
                        let d = if negative {
                            10u8.checked_sub(*b)?
                        } else {
                            b.checked_sub(1)?
                        };
                        (d <= 9).then_some(d)
                    })
                    .collect::<Option<Vec<u8>>>()?;
                let n = Number::normalised(negative, digits, i64::from(e) - 129).ok()?;
                // Only the canonical encoding is accepted.
                (n.key_bytes().len() == len + 3).then_some((n, len + 3))
            }
            _ => None,
        }
    }
}

fn add_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len() + 1];
    let mut carry = 0;
    for i in (0..a.len()).rev() {
        let s = a[i] + b[i] + carry;
        out[i + 1] = s % 10;
        carry = s / 10;
    }
    out[0] = carry;
    if carry == 0 {
        out.remove(0);
    }
    out
}

/// a - b for a > b, same widths.
fn sub_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i8;
    for i in (0..a.len()).rev() {
        let mut d = a[i] as i8 - b[i] as i8 - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    out
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        self.key_bytes().cmp(&other.key_bytes())
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Number {
    /// Plain notation when the number is between 1E-20 and 1E+38, else
    /// scientific (`1.5E+100`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        let ds: String = self.digits.iter().map(|d| char::from(b'0' + d)).collect();
        let n = self.digits.len() as i64;
        if (-19..=38).contains(&self.exp) {
            if self.exp <= 0 {
                write!(f, "0.{}{ds}", "0".repeat((-self.exp) as usize))
            } else if self.exp >= n {
                write!(f, "{ds}{}", "0".repeat((self.exp - n) as usize))
            } else {
                let (int, frac) = ds.split_at(self.exp as usize);
                write!(f, "{int}.{frac}")
            }
        } else {
            let (first, rest) = ds.split_at(1);
            let e = self.exp - 1;
            if rest.is_empty() {
                write!(f, "{first}E{}{e}", if e >= 0 { "+" } else { "" })
            } else {
                write!(f, "{first}.{rest}E{}{e}", if e >= 0 { "+" } else { "" })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn equal_numbers_normalise_alike() {
        for same in [
            &["1", "1.0", "+1", "01", "10E-1", "0.1e1", "1.000000"][..],
            &["0", "-0", "0.000", "0e99", "+0.0"],
            &["-12.5", "-1.25E1", "-125e-1", "-0012.50"],
            &["1E+125", "1e125", "10E124"],
        ] {
            let first = n(same[0]);
            for s in same {
                assert_eq!(n(s), first, "{s}");
                assert_eq!(n(s).to_string(), first.to_string(), "{s}");
                assert_eq!(n(s).key_bytes(), first.key_bytes(), "{s}");
            }
        }
        assert_eq!(n("1.50").to_string(), "1.5");
        assert_eq!(n("100").to_string(), "100");
        assert_eq!(n("0.001").to_string(), "0.001");
        assert_eq!(n("-1.5e100").to_string(), "-1.5E+100");
        assert_eq!(n("1e-100").to_string(), "1E-100");
    }

    #[test]
    fn range_precision_and_syntax_are_checked() {
        assert!(Number::parse("9.9999999999999999999999999999999999999E+125").is_ok());
        assert_eq!(Number::parse("1E+126"), Err(NumberError::Overflow));
        assert_eq!(Number::parse("-1E+126"), Err(NumberError::Overflow));
        assert!(Number::parse("1E-130").is_ok());
        assert_eq!(Number::parse("1E-131"), Err(NumberError::Underflow));
        assert!(Number::parse("12345678901234567890123456789012345678").is_ok());
        assert_eq!(
            Number::parse("123456789012345678901234567890123456789"),
            Err(NumberError::Precision)
        );
        // Trailing zeros are not significant.
        assert!(Number::parse("1234567890123456789012345678901234567800000").is_ok());
        for bad in [
            "", "-", ".", "e5", "1e", "1e+", "1.2.3", "1,5", " 1", "1 ", "0x10", "NaN", "Infinity",
            "1e5.5", "--1",
        ] {
            assert!(
                matches!(Number::parse(bad), Err(NumberError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            Number::parse("1e99999999999999999999"),
            Err(NumberError::Overflow)
        );
        assert_eq!(
            Number::parse("1e-99999999999999999999"),
            Err(NumberError::Underflow)
        );
    }

    #[test]
    fn sums_are_exact() {
        assert_eq!(n("0.1").checked_add(&n("0.2")).expect("sum"), n("0.3"));
        assert_eq!(n("999").checked_add(&n("1")).expect("sum"), n("1000"));
        assert_eq!(n("5").checked_add(&n("-5")).expect("sum"), Number::zero());
        assert_eq!(n("-3").checked_add(&n("1.25")).expect("sum"), n("-1.75"));
        assert_eq!(
            n("1E+100").checked_add(&n("1")),
            Err(NumberError::Precision)
        );
        assert_eq!(
            n("9.9999999999999999999999999999999999999E+125").checked_add(&n("1E+125")),
            Err(NumberError::Overflow)
        );
    }

    fn decimal() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            "[0-9]{1,20}",
            proptest::option::of("[0-9]{1,15}"),
            -60i32..60,
        )
            .prop_map(|(neg, int, frac, e)| {
                let mut s = String::new();
                if neg {
                    s.push('-');
                }
                s.push_str(&int);
                if let Some(f) = frac {
                    s.push('.');
                    s.push_str(&f);
                }
                s.push_str(&format!("e{e}"));
                s
            })
    }

    proptest! {
        #[test]
        fn printing_round_trips(s in decimal()) {
            let x = n(&s);
            prop_assert_eq!(n(&x.to_string()), x);
        }

        #[test]
        fn byte_order_is_numeric_order(a in decimal(), b in decimal()) {
            let (x, y) = (n(&a), n(&b));
            let (fx, fy): (f64, f64) = (a.parse().expect("f64"), b.parse().expect("f64"));
            // Where f64 tells them apart, it agrees with our order.
            if (fx - fy).abs() > 1e-9 * fx.abs().max(fy.abs()) {
                prop_assert_eq!(x.cmp(&y), fx.partial_cmp(&fy).expect("ordered"));
            }
            prop_assert_eq!(x.key_bytes().cmp(&y.key_bytes()), x.cmp(&y));
        }

        #[test]
        fn key_bytes_decode_back(a in decimal(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let x = n(&a);
            let mut raw = x.key_bytes();
            let len = raw.len();
            raw.extend_from_slice(&tail);
            prop_assert_eq!(Number::from_key_bytes(&raw), Some((x, len)));
        }

        #[test]
        fn key_bytes_decoding_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..48)) {
            if let Some((x, len)) = Number::from_key_bytes(&raw) {
                prop_assert_eq!(&x.key_bytes()[..], &raw[..len]);
            }
        }

        #[test]
        fn addition_commutes_and_cancels(a in decimal(), b in decimal()) {
            let (x, y) = (n(&a), n(&b));
            if let Ok(s) = x.checked_add(&y) {
                prop_assert_eq!(y.checked_add(&x).expect("commutes"), s.clone());
                prop_assert_eq!(s.checked_add(&y.neg()), Ok(x.clone()));
            }
            prop_assert_eq!(x.checked_add(&x.neg()), Ok(Number::zero()));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = Number::parse(&s);
        }
    }
}
