//! Outcomes of OpenAPI contract validation, per API and operation:
//! `api_shield_gateway_contract_validations_total{api, operation, outcome}`.
//!
//! - `api`: the document's file name from `[[gateway.apis]]`.
//! - `operation`: the operation's `operationId`, else its path template; `none` for a
//!   request matching no operation. Both come from the operator's document, never from a
//!   request, so the label set is bounded by the documents.
//! - `outcome`: see [`ContractOutcome`]. Operations in mode `off` are not counted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The `operation` label of a request that matched no operation of its API.
pub const NO_OPERATION: &str = "none";

/// What came of validating one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContractOutcome {
    /// It matched its operation.
    Passed,
    /// It broke the contract and was refused (mode `enforce`).
    FailedEnforced,
    /// It broke the contract and was let through (mode `monitor`).
    FailedMonitored,
    /// No operation of the API has its method and path (refused only with
    /// `refuse_unknown_operations` in mode `enforce`).
    UnknownOperation,
}

impl ContractOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::FailedEnforced => "failed_enforced",
            Self::FailedMonitored => "failed_monitored",
            Self::UnknownOperation => "unknown_operation",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    api: String,
    operation: String,
    outcome: &'static str,
}

/// The counters; one per gateway, surviving reloads (a series of a removed operation stays).
#[derive(Debug, Default)]
pub struct ContractMetrics {
    validations: Family<Labels, Counter>,
}

impl ContractMetrics {
    /// Counts one request of `api`'s `operation`.
    pub fn record(&self, api: &str, operation: &str, outcome: ContractOutcome) {
        let labels = Labels {
            api: api.to_owned(),
            operation: operation.to_owned(),
            outcome: outcome.as_str(),
        };
        self.validations.get_or_create(&labels).inc();
    }

    /// The count of one series (tests and `status`).
    pub fn get(&self, api: &str, operation: &str, outcome: ContractOutcome) -> u64 {
        let labels = Labels {
            api: api.to_owned(),
            operation: operation.to_owned(),
            outcome: outcome.as_str(),
        };
        self.validations.get_or_create(&labels).get()
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "api_shield_gateway_contract_validations",
            "Requests validated against an OpenAPI contract of [[gateway.apis]], by API (its \
             document's file name), operation (operationId or template; none when no operation \
             matched) and outcome: passed, failed_enforced (refused with 400), failed_monitored \
             (let through), unknown_operation",
            self.validations.clone(),
        );
    }
}
