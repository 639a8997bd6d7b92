//! Enums written as fixed words (`critical`, `no_data`, `rolled_back`): each enum's `as_str`
//! over its `ALL` is the one table of its words, and serde writes and reads through it, so
//! the words in JSON, YAML, the store and the CLI cannot drift apart.

/// Implements `Display`, `Serialize`, `Deserialize` and the OpenAPI schema for an enum with
/// `ALL` and a `const fn as_str`: written as its word, read back from the same table, refused
/// with serde's own message (and the field's position) for any other word, and documented as
/// a string of those words.
macro_rules! serde_by_name {
    ($ty:ident) => {
        impl $ty {
            /// Every word, in the order of `ALL`.
            pub const WORDS: [&'static str; $ty::ALL.len()] = {
                let mut out = [""; $ty::ALL.len()];
                let mut i = 0;
                while i < out.len() {
                    out[i] = $ty::ALL[i].as_str();
                    i += 1;
                }
                out
            };
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct Words;

                impl serde::de::Visitor<'_> for Words {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("variant identifier")
                    }

                    fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<$ty, E> {
                        $ty::ALL
                            .into_iter()
                            .find(|v| v.as_str() == word)
                            .ok_or_else(|| E::unknown_variant(word, &$ty::WORDS))
                    }
                }

                d.deserialize_str(Words)
            }
        }

        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some($ty::WORDS))
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}
pub(crate) use serde_by_name;

#[cfg(test)]
mod tests {
    use crate::analysis::policy::Severity;
    use crate::analysis::Verdict;
    use crate::machine::State;

    #[test]
    fn serde_writes_and_reads_the_words_of_as_str() {
        for v in Verdict::ALL {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, v.as_str());
            assert_eq!(serde_json::from_value::<Verdict>(json).unwrap(), v);
        }
        for s in Severity::ALL {
            let yaml: Severity = serde_saphyr::from_str(s.as_str()).unwrap();
            assert_eq!(yaml, s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in State::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let e = serde_json::from_str::<Severity>("\"fatal\"").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown variant `fatal`, expected `critical` or `warning`"),
            "{e}"
        );
    }
}
