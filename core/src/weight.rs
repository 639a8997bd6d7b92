//! Weights in basis points, checked when built so the request path can trust them.

use std::fmt;

/// Basis points of 10,000: 0 is nobody, 10,000 is everybody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bp(u16);

pub const FULL: u16 = 10_000;

// === impl Bp ===

impl Bp {
    pub const ZERO: Bp = Bp(0);
    pub const FULL: Bp = Bp(FULL);

    /// From a percentage with at most two decimals (20, 12.5, 0.01). NaN, infinities, values
    /// outside 0..=100 and finer fractions are refused with a message saying which.
    pub fn from_percent(percent: f64) -> Result<Bp, String> {
        if !percent.is_finite() {
            return Err(format!("{percent} is not a number between 0 and 100"));
        }
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("{percent} is outside 0..=100"));
        }
        let scaled = percent * 100.0;
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 {
            return Err(format!("{percent} has more than two decimal places"));
        }
        // In range by the checks above.
        Ok(Bp(rounded as u16))
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl TryFrom<u16> for Bp {
    type Error = String;
    fn try_from(bp: u16) -> Result<Self, Self::Error> {
        if bp <= FULL {
            Ok(Bp(bp))
        } else {
            Err(format!("{bp} basis points is more than {FULL}"))
        }
    }
}

impl fmt::Display for Bp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.as_percent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_conversion() {
        assert_eq!(Bp::from_percent(20.0).unwrap().get(), 2000);
        assert_eq!(Bp::from_percent(12.5).unwrap().get(), 1250);
        assert_eq!(Bp::from_percent(0.01).unwrap().get(), 1);
        assert_eq!(Bp::from_percent(100.0).unwrap(), Bp::FULL);
        assert_eq!(Bp::from_percent(33.33).unwrap().get(), 3333);
        assert!(Bp::from_percent(f64::NAN)
            .unwrap_err()
            .contains("not a number"));
        assert!(Bp::from_percent(f64::INFINITY).is_err());
        assert!(Bp::from_percent(-0.5).unwrap_err().contains("outside"));
        assert!(Bp::from_percent(100.01).unwrap_err().contains("outside"));
        assert!(Bp::from_percent(0.001).unwrap_err().contains("decimal"));
        assert!(Bp::try_from(10_001).is_err());
        assert_eq!(Bp::try_from(10_000).unwrap(), Bp::FULL);
    }
}
