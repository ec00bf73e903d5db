//! Decodes a `/v1/decisions/stream` answer one decision at a time.
//!
//! The answer is `{"new": [...], "deleted": [...]}`, either list `null` or absent. Each element
//! is read into a small [`WireDecision`] borrowing its text from the answer, mapped through the
//! [`Filter`] at once and dropped: only what the list needs is kept (a [`Mapped`] decision, or
//! the net and id of a deletion). A hostile local API that sends millions of `{}` therefore
//! costs a counter, not a structure per element (decoding the whole answer into a `Vec` of
//! optional strings first took some 100 times the answer's size).
//!
//! An element that is not an object, or has a known field of the wrong type, is skipped and
//! counted as `malformed`; the rest of the answer still counts. An answer that is not JSON, or
//! whose top level is not such an object, is an error and changes nothing.

use std::borrow::Cow;
use std::fmt;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::decisions::{Filter, MapStats, Mapped, WireDecision, deleted_net, map_new};

/// One answer, decoded and filtered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamAnswer {
    /// The new decisions the filter took, in the answer's order.
    pub(super) new: Vec<Mapped>,
    /// The net and id of each deleted decision that names a net (kept only for a delta).
    pub(super) deleted: Vec<(IpNet, Option<i64>)>,
    /// What the new decisions became, and how many elements of either list were malformed.
    pub stats: MapStats,
}

impl StreamAnswer {
    /// New decisions taken.
    pub fn accepted(&self) -> usize {
        self.new.len()
    }
}

/// Which parts of the answer are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// A full state (`startup=true`): the `deleted` part says nothing about it and is only
    /// checked and counted.
    NewOnly,
    /// A delta: deletions are kept too.
    NewAndDeleted,
}

/// Decodes `body`, mapping each new decision through `filter`.
pub fn decode(body: &[u8], filter: &Filter, keep: Keep) -> Result<StreamAnswer, serde_json::Error> {
    let mut answer = StreamAnswer::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(TopVisitor {
        filter,
        keep,
        answer: &mut answer,
    })?;
    // Trailing text after the object makes it no answer at all.
    de.end()?;
    Ok(answer)
}

// ---- the top level -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum TopField {
    New,
    Deleted,
    /// CrowdSec may add parts; they are read over.
    #[serde(other)]
    Other,
}

struct TopVisitor<'a> {
    filter: &'a Filter,
    keep: Keep,
    answer: &'a mut StreamAnswer,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decision stream object with `new` and `deleted` lists")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut seen_new, mut seen_deleted) = (false, false);
        while let Some(field) = map.next_key::<TopField>()? {
            match field {
                TopField::New => {
                    // Two `new` lists would leave it open which one CrowdSec meant.
                    if std::mem::replace(&mut seen_new, true) {
                        return Err(de::Error::duplicate_field("new"));
                    }
                    map.next_value_seed(ListSeed {
                        part: Part::New,
                        filter: self.filter,
                        keep: self.keep,
                        answer: self.answer,
                    })?;
                }
                TopField::Deleted => {
                    if std::mem::replace(&mut seen_deleted, true) {
                        return Err(de::Error::duplicate_field("deleted"));
                    }
                    map.next_value_seed(ListSeed {
                        part: Part::Deleted,
                        filter: self.filter,
                        keep: self.keep,
                        answer: self.answer,
                    })?;
                }
                TopField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

// ---- the two lists -------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Part {
    New,
    Deleted,
}

/// One of the two lists, `null` or an array; handled element by element.
struct ListSeed<'a> {
    part: Part,
    filter: &'a Filter,
    keep: Keep,
    answer: &'a mut StreamAnswer,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of decisions or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let answer = self.answer;
        while let Some(element) = seq.next_element::<Element<'de>>()? {
            let Element::Decision(d) = element else {
                answer.stats.malformed += 1;
                continue;
            };
            match self.part {
                Part::New => {
                    if let Some(m) = map_new(&d, self.filter, &mut answer.stats) {
                        answer.new.push(m);
                    }
                }
                Part::Deleted => {
                    if self.keep == Keep::NewAndDeleted
                        && let Some(net) = deleted_net(&d)
                    {
                        answer.deleted.push((net, d.id));
                    }
                }
            }
        }
        Ok(())
    }
}

// ---- one element ---------------------------------------------------------------------------

/// One element of a list: a decision, or something that is none (skipped and counted).
enum Element<'de> {
    Decision(WireDecision<'de>),
    Malformed,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Id,
    Scope,
    Value,
    #[serde(rename = "type")]
    Kind,
    Duration,
    Scenario,
    /// Newer CrowdSec versions add fields (`uuid`, `origin`, `simulated`, ...).
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

/// Sets `slot` from a field's value; `false` when the value has the wrong type or the field
/// came twice (which of the two would be meant is a guess).
fn set<T>(slot: &mut Option<T>, value: Lenient<T>) -> bool {
    match value {
        Lenient::Wrong => false,
        _ if slot.is_some() => false,
        Lenient::Null => true,
        Lenient::Value(v) => {
            *slot = Some(v);
            true
        }
    }
}

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element<'de>, A::Error> {
        let mut d = WireDecision::default();
        let mut well_formed = true;
        while let Some(field) = map.next_key::<Field>()? {
            let ok = match field {
                Field::Id => set(&mut d.id, map.next_value()?),
                Field::Scope => set(&mut d.scope, map.next_value()?),
                Field::Value => set(&mut d.value, map.next_value()?),
                Field::Kind => set(&mut d.kind, map.next_value()?),
                Field::Duration => set(&mut d.duration, map.next_value()?),
                Field::Scenario => set(&mut d.scenario, map.next_value()?),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    true
                }
            };
            // The rest of the object is still read: the list goes on after it.
            well_formed &= ok;
        }
        Ok(if well_formed {
            Element::Decision(d)
        } else {
            Element::Malformed
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element<'de>, A::Error> {
        drain_seq(seq)?;
        Ok(Element::Malformed)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element<'de>, E> {
        Ok(Element::Malformed)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element<'de>, E> {
        Ok(Element::Malformed)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element<'de>, E> {
        Ok(Element::Malformed)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element<'de>, E> {
        Ok(Element::Malformed)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Element<'de>, E> {
        Ok(Element::Malformed)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Element<'de>, E> {
        Ok(Element::Malformed)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

// ---- one field -----------------------------------------------------------------------------

/// A field's value: of the expected type, `null` (as good as absent), or of another type.
enum Lenient<T> {
    Null,
    Value(T),
    Wrong,
}

/// The JSON forms a field's type accepts.
trait Expected<'de>: Sized {
    fn from_text(_: Cow<'de, str>) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
}

impl<'de> Expected<'de> for Cow<'de, str> {
    fn from_text(text: Cow<'de, str>) -> Option<Self> {
        Some(text)
    }
}

impl Expected<'_> for i64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok()
    }
}

impl<'de, T: Expected<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor(std::marker::PhantomData))
    }
}

struct LenientVisitor<T>(std::marker::PhantomData<T>);

fn lenient<T>(value: Option<T>) -> Lenient<T> {
    value.map_or(Lenient::Wrong, Lenient::Value)
}

impl<'de, T: Expected<'de>> Visitor<'de> for LenientVisitor<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Lenient<T>, E> {
        Ok(lenient(T::from_text(Cow::Borrowed(v))))
    }

    // Text with escapes cannot be borrowed from the answer.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Lenient<T>, E> {
        Ok(lenient(T::from_text(Cow::Owned(v.to_owned()))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Lenient<T>, E> {
        Ok(lenient(T::from_i64(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Lenient<T>, E> {
        Ok(lenient(T::from_u64(v)))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lenient<T>, E> {
        Ok(Lenient::Wrong)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient<T>, E> {
        Ok(Lenient::Wrong)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Lenient<T>, E> {
        Ok(Lenient::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Lenient<T>, A::Error> {
        drain_seq(seq)?;
        Ok(Lenient::Wrong)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lenient<T>, A::Error> {
        drain_map(map)?;
        Ok(Lenient::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::crowdsec::CrowdsecConfig;
    use crate::feeds::crowdsec::decisions::tests::decision;

    fn filter() -> Filter {
        Filter::new(&CrowdsecConfig::new("/k".into()))
    }

    fn delta(json: &str) -> StreamAnswer {
        decode(json.as_bytes(), &filter(), Keep::NewAndDeleted)
            .unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn malformed_elements_are_skipped_and_counted_and_the_rest_is_taken() {
        let good = decision(1, "Ip", "198.18.9.5", "ban", "1h");
        let gone = decision(2, "Ip", "198.18.9.6", "ban", "-1s");
        let json = format!(
            r#"{{"new":[{{}}, 42, "x", null, true, 1.5, [1,[2]], {{"id":"7","scope":"Ip","value":"198.18.9.7","type":"ban","duration":"1h"}},
                {{"scope":"Ip","value":5,"type":"ban","duration":"1h"}},
                {{"scope":"Ip","value":"198.18.9.8","type":"ban","duration":"1h","value":"198.18.9.9"}},
                {{"scope":"Ip","value":"198.18.9.8","type":"ban","duration":{{"h":1}}}},
                {{"id":-1e3,"scope":"Ip","value":"198.18.9.8","type":"ban","duration":"1h"}},
                {{"id":18446744073709551615,"scope":"Ip","value":"198.18.9.8","type":"ban","duration":"1h"}},
                {good}],
              "deleted":[{gone}, 7, {{"scope":["Ip"],"value":"198.18.9.6"}}],
              "extra":{{"ignored":[1,2,3]}}}}"#
        );
        let a = delta(&json);
        assert_eq!(a.accepted(), 1);
        assert_eq!(a.deleted.len(), 1, "{:?}", a.deleted);
        // `{}` lacks every field (invalid); the rest have the wrong shape, in `new` (12) or
        // `deleted` (2).
        assert_eq!(
            (a.stats.invalid, a.stats.malformed),
            (1, 14),
            "{:?}",
            a.stats
        );
        assert_eq!(a.stats.accepted, 1);
    }

    #[test]
    fn null_fields_are_absent_and_escaped_text_is_read() {
        let a = delta(
            r#"{"new":[{"id":null,"scope":"Ip","value":"198.18.9.5","type":"b\u0061n","duration":"1h","scenario":null,"origin":null},
                       {"scope":"Ip","value":"198.18.9.6","type":"ban","duration":"1h","scenario":"crowdsecurity\/ssh-bf"}]}"#,
        );
        assert_eq!((a.accepted(), a.stats.malformed), (2, 0), "{:?}", a.stats);
        assert_eq!(a.new[0].id_for_test(), None);
        assert_eq!(a.new[1].reason_for_test(), Some("crowdsecurity/ssh-bf"));
    }

    #[test]
    fn a_startup_answer_keeps_no_deletions_but_counts_malformed_ones() {
        let json = format!(
            r#"{{"deleted":[{}, 3],"new":null}}"#,
            decision(2, "Ip", "198.18.9.6", "ban", "-1s")
        );
        let a = decode(json.as_bytes(), &filter(), Keep::NewOnly).unwrap();
        assert!(a.deleted.is_empty());
        assert_eq!(a.stats.malformed, 1);
    }

    #[test]
    fn an_answer_that_is_not_a_stream_is_an_error() {
        for bad in [
            "",
            "null",
            "[]",
            "42",
            r#""new""#,
            r#"{"new":{}}"#,
            r#"{"new":"x"}"#,
            r#"{"deleted":7}"#,
            r#"{"new":[],"new":[]}"#,
            r#"{"deleted":null,"deleted":null}"#,
            r#"{"new":[{}]"#,
            r#"{"new":[{}]} trailing"#,
            r#"{"new":[{"scope":"Ip",}]}"#,
            "{\"new\":[\"\u{1}\"]}",
            "<html>502 Bad Gateway</html>",
        ] {
            assert!(
                decode(bad.as_bytes(), &filter(), Keep::NewAndDeleted).is_err(),
                "{bad:?} was taken"
            );
        }
    }

    /// A million empty objects: counted one by one, nothing kept per element.
    #[test]
    fn empty_objects_cost_a_counter() {
        const COUNT: usize = 1_000_000;
        let mut json = String::from(r#"{"new":["#);
        json.push_str(&"{},".repeat(COUNT));
        json.push_str(&decision(1, "Ip", "198.18.9.5", "ban", "1h"));
        json.push_str("]}");
        let a = delta(&json);
        assert_eq!((a.stats.invalid, a.accepted()), (COUNT, 1));
        assert!(a.new.capacity() < COUNT / 1_000, "{}", a.new.capacity());
    }
}
