//! graduated_percentage: progressive tiers of a percent rate plus a flat fee per tier,
//! always counted integer style.

use super::graduated::{into_map, priced_tiers};
use super::Priced;
use crate::base::decimal::percent_of;
use crate::base::error::Result;
use crate::domain::pricing::fields::Fields;
use crate::domain::pricing::ranges::{walk, Continuity, Range, RangeSpec, TierStyle};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const SPEC: RangeSpec =
    RangeSpec { key: "graduated_percentage_ranges", price_key: "rate", continuity: Continuity::SameOrNext };

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraduatedPercentage {
    pub ranges: Vec<Range>,
}

impl GraduatedPercentage {
    pub fn parse(props: &Fields) -> Result<Self> {
        props.deny_unknown(&[SPEC.key], "charge model graduated_percentage")?;
        Ok(GraduatedPercentage { ranges: SPEC.parse(props)? })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        into_map(SPEC.to_json(&self.ranges))
    }

    pub fn price(&self, units: Decimal) -> Result<Priced<'_>> {
        let lines = walk(&self.ranges, units, TierStyle::Integer, percent_of)?;
        priced_tiers(SPEC.key, SPEC.price_key, lines)
    }
}
