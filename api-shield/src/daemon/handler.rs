//! Answers control requests from the socket with the daemon's operations, and audits every
//! change with who asked.

use super::import::{self, ImportRequest};
use super::ops::{BlockOptions, OpError, State, parse_nets};
use super::reload::Reloader;
use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::control::{
    BodyLimits, ControlErrorCode, Handler, PeerCred, Request, RequestBody, Response,
};
use crate::inventory::SharedInventory;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, PoisonError};

pub struct DaemonHandler {
    pub state: Arc<Mutex<State>>,
    pub audit: Arc<AuditLog>,
    pub reloader: Arc<Reloader>,
    /// `[import]` as the daemon started with it.
    pub body_limits: BodyLimits,
    /// The inventory the gateway records into; `None` without a gateway or with
    /// `[inventory]` off.
    pub inventory: Option<Arc<SharedInventory>>,
}

impl DaemonHandler {
    /// `reload`: audited with who asked, like every change; the answer carries the warnings of
    /// a reload that took effect, or every problem of one that changed nothing.
    fn reload(&self, peer: &PeerCred) -> Response {
        let outcome = self.reloader.reload();
        let (result, detail) = match &outcome {
            Ok(report) => (Outcome::Ok, json!(report)),
            Err(e) => (Outcome::Error, json!(e.errors)),
        };
        self.record(&AuditEvent {
            peer,
            op: Request::Reload.op(),
            args: json!({"trigger": "control_socket"}),
            result,
            detail: detail.clone(),
        });
        match outcome {
            Ok(_) => Response::ok(detail),
            Err(e) => Response::error(
                ControlErrorCode::ReloadRefused,
                format!(
                    "the reload changed nothing; the daemon keeps its running config:\n{}",
                    e.errors.join("\n")
                ),
            ),
        }
    }

    fn record(&self, event: &AuditEvent<'_>) {
        if let Err(e) = self.audit.record(event) {
            tracing::error!(error = %e, "audit log write failed");
        }
    }
}

impl Handler for DaemonHandler {
    fn body_limits(&self) -> BodyLimits {
        self.body_limits
    }

    fn handle(&self, peer: &PeerCred, req: Request, body: RequestBody) -> Response {
        if matches!(req, Request::Reload) {
            // Reads the files before taking the daemon's lock, so not under it.
            return self.reload(peer);
        }
        if let Request::Inventory { host } | Request::InventoryExport { host } = &req {
            // Read requests answered from the inventory alone, not under the state lock.
            let export = matches!(req, Request::InventoryExport { .. });
            return self.inventory(host.as_deref(), export);
        }
        let op = req.op();
        let mut args = match &req {
            Request::Block { .. }
            | Request::Unblock { .. }
            | Request::Allow { .. }
            | Request::Unallow { .. }
            | Request::Import { .. }
            | Request::Flush { .. } => Some(serde_json::to_value(&req).unwrap_or(Value::Null)),
            _ => None,
        };
        if let (Some(Value::Object(a)), RequestBody::Bytes(bytes)) = (&mut args, &body) {
            a.insert("bytes".into(), json!(bytes.len()));
        }
        let result = match req {
            Request::Import {
                list,
                source,
                format,
                skip_invalid,
                force,
                allow_shrink,
            } => {
                // Parsed before the state lock is taken: only the swap holds it.
                let request = ImportRequest {
                    list,
                    source,
                    format,
                    skip_invalid,
                    force,
                    allow_shrink,
                };
                match body {
                    RequestBody::Bytes(bytes) => {
                        import::prepare(request, bytes).and_then(|prepared| {
                            let applied = {
                                let mut state =
                                    self.state.lock().unwrap_or_else(PoisonError::into_inner);
                                prepared.apply(&mut state)
                            };
                            applied.map_err(import::Refusal::explained)
                        })
                    }
                    RequestBody::Refused(e) => Err(OpError::Invalid(e.to_string())),
                    RequestBody::None => Err(OpError::Invalid(
                        "an import carries the list after the request line".into(),
                    )),
                }
            }
            req => self.under_lock(req),
        };
        if let Some(args) = args {
            let (outcome, detail) = match &result {
                Ok(body) => (Outcome::Ok, body.clone()),
                Err(e) => (Outcome::Error, json!(e.to_string())),
            };
            self.record(&AuditEvent {
                peer,
                op,
                args,
                result: outcome,
                detail,
            });
        }
        match result {
            Ok(body) => Response::ok(body),
            Err(OpError::Invalid(m)) => Response::error(ControlErrorCode::InvalidInput, m),
            Err(OpError::Refused(m) | OpError::Lockout { message: m, .. }) => {
                Response::error(ControlErrorCode::Refused, m)
            }
            Err(OpError::Internal(m)) => Response::error(ControlErrorCode::Internal, m),
        }
    }
}

impl DaemonHandler {
    /// `inventory` and `inventory_export`: rows or the OpenAPI document are made under the
    /// inventory's lock, serialised after it.
    fn inventory(&self, host: Option<&str>, export: bool) -> Response {
        let Some(inventory) = &self.inventory else {
            return Response::error(
                ControlErrorCode::Refused,
                "no inventory: it is kept when a [gateway] runs and [inventory] enabled = true",
            );
        };
        let host = host.map(str::to_ascii_lowercase);
        let host = host.as_deref();
        if export {
            Response::ok(inventory.read(|i| i.openapi(host)))
        } else {
            let rows = inventory.read(|i| i.listing(host));
            match body(&rows) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::error(ControlErrorCode::Internal, e.to_string()),
            }
        }
    }

    /// The requests answered wholly under the state lock.
    fn under_lock(&self, req: Request) -> Result<Value, OpError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match req {
            Request::Status => body(&state.status()),
            Request::Stats => state.stats().and_then(|stats| body(&stats)),
            Request::List { action, origin } => Ok(state.list(action, origin.as_deref())),
            Request::Lists => state.lists().and_then(|rows| body(&rows)),
            Request::Import { .. } => Err(OpError::Internal(
                "an import is answered outside the state lock".into(),
            )),
            Request::Flush { list } => state.flush(&list).and_then(|a| body(&a)),
            Request::Block {
                nets,
                ttl_secs,
                reason,
                force,
                list,
            } => {
                let opts = BlockOptions {
                    ttl_secs,
                    reason,
                    list,
                    force,
                };
                state
                    .block(&parse_nets(&nets)?, opts)
                    .and_then(|a| body(&a))
            }
            Request::Unblock { nets, list } => state
                .unblock(&parse_nets(&nets)?, list.as_deref())
                .and_then(|a| body(&a)),
            Request::Allow { nets } => state.allow(&parse_nets(&nets)?).and_then(|a| body(&a)),
            Request::Unallow { nets } => state.unallow(&parse_nets(&nets)?).and_then(|a| body(&a)),
            Request::Reload | Request::Inventory { .. } | Request::InventoryExport { .. } => {
                Err(OpError::Internal("answered outside the state lock".into()))
            }
        }
    }
}

/// A typed answer as the response body.
fn body(answer: &impl serde::Serialize) -> Result<Value, OpError> {
    serde_json::to_value(answer).map_err(|e| OpError::Internal(e.to_string()))
}

/// Audits something the daemon did on its own (start, reload, kernel auto-blocks).
pub fn audit_self(audit: &AuditLog, op: &str, args: Value, ok: bool, detail: Value) {
    let me = PeerCred {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
        pid: i32::try_from(std::process::id()).ok(),
    };
    let event = AuditEvent {
        peer: &me,
        op,
        args,
        result: if ok { Outcome::Ok } else { Outcome::Error },
        detail,
    };
    if let Err(e) = audit.record(&event) {
        tracing::error!(error = %e, "audit log write failed");
    }
}
