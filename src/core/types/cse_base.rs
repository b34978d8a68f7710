//! `<CSEBase>` (ty 5): the root, made from the configuration at start (`bootstrap`), never
//! created, updated or deleted by a request. Its `ctm` is the time of reading.

use super::{TypeRules, universal};
use crate::core::request::Operation;
use crate::resource::{Policy, Resource, ResourceType, Timestamp};

pub(super) struct CseBase;

impl TypeRules for CseBase {
    fn policy(&self, name: &str) -> Option<Policy> {
        universal(name)
    }

    fn children(&self) -> &'static [ResourceType] {
        use ResourceType::*;
        &[Acp, Ae, Cnt, Csr, Sub, CseBaseAnnc, AeAnnc, AcpAnnc, CntAnnc]
    }

    fn refuses(&self, op: Operation) -> Option<&'static str> {
        match op {
            Operation::Create => Some("a CSEBase cannot be created"),
            Operation::Update => Some("the CSEBase cannot be updated"),
            Operation::Delete => Some("the CSEBase cannot be deleted"),
            Operation::Retrieve | Operation::Notify => None,
        }
    }

    fn present(&self, cse_base: &mut Resource) {
        cse_base.set("ctm", Timestamp::now());
    }

    fn now_attribute(&self) -> Option<&'static str> {
        Some("ctm")
    }
}
