//! NOTIFY to a local resource: checked (the target takes notifications, the originator
//! may notify it), then relayed to the entity (see `core::notify::deliver`). A NOTIFY for
//! another CSE never gets here: it is forwarded like any request.

use crate::core::Cse;
use crate::core::access::{Access, Permission, Touches};
use crate::core::address::LocalTarget;
use crate::core::request::{Request, Response};
use crate::core::tree::locate;
use crate::error::{Error, Result};
use crate::resource::ResourceType;

impl Cse {
    pub(in crate::core) async fn notify(
        &self,
        request: &Request,
        target: LocalTarget,
        guard: Access,
    ) -> Result<Response> {
        if target.virtual_child.is_some() {
            return Err(Error::not_allowed("la and ol do not take notifications"));
        }
        let own = self.identity.cse_id.to_string();
        let resource = self
            .storage
            .read(move |tx| {
                let resource = locate(tx, &target.id)?;
                if resource.ty == ResourceType::CseBase {
                    return Err(Error::bad_request("the CSEBase does not take notifications"));
                }
                // This CSE's own notifications always pass; others need NOTIFY permission.
                if guard.accessor.originator != own {
                    guard.check(tx, &resource, Permission::Notify, None, Touches::Whole)?;
                }
                Ok(resource)
            })
            .await?;
        self.receive_notify(request, &resource).await
    }
}
