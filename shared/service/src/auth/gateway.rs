//! Gateway mode: the principal the API Gateway HTTP API (or the Function URL) authorizer put in the
//! request context. Headers are never trusted here: without an authorizer context there is no caller.

use lambda_http::request::RequestContext;
use trace_core::Principal;

/// The principal of the request context: IAM `userArn` (tenant: its account), or JWT `iss` + `sub`
/// (tenant: the `tenant_claim` claim when configured). `None` when the context has neither.
pub fn principal(context: Option<&RequestContext>, tenant_claim: Option<&str>) -> Option<Principal> {
    let RequestContext::ApiGatewayV2(context) = context? else {
        return None;
    };
    let authorizer = context.authorizer.as_ref()?;
    if let Some(iam) = &authorizer.iam {
        let arn = iam.user_arn.as_deref().filter(|a| !a.is_empty())?;
        let tenant = iam.account_id.clone().filter(|a| !a.is_empty()).or_else(|| arn_account(arn));
        return Some(Principal::new(arn, tenant));
    }
    if let Some(jwt) = &authorizer.jwt {
        let issuer = jwt.claims.get("iss").filter(|v| !v.is_empty())?;
        let subject = jwt.claims.get("sub").filter(|v| !v.is_empty())?;
        let tenant = tenant_claim.and_then(|c| jwt.claims.get(c)).filter(|v| !v.is_empty()).cloned();
        return Some(Principal::new(format!("jwt:{issuer}#{subject}"), tenant));
    }
    None
}

/// The account id of an ARN (`arn:aws:iam::123456789012:user/alice` → `123456789012`).
pub fn arn_account(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (!account.is_empty()).then(|| account.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(authorizer: serde_json::Value) -> RequestContext {
        let mut ctx = serde_json::json!({
            "accountId": "123456789012", "apiId": "k3x9q2r7vd", "requestId": "r", "routeKey": "$default",
            "stage": "$default", "timeEpoch": 0,
            "http": {"method": "GET", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.1", "userAgent": "t"}
        });
        if !authorizer.is_null() {
            ctx["authorizer"] = authorizer;
        }
        RequestContext::ApiGatewayV2(serde_json::from_value(ctx).unwrap())
    }

    #[test]
    fn an_iam_context_names_the_caller_s_arn_and_account() {
        let ctx = context(serde_json::json!({"iam": {
            "accessKey": "ASIA", "accountId": "123456789012", "callerId": "AROA:x",
            "userArn": "arn:aws:sts::123456789012:assumed-role/dash/x", "userId": "AROA:x"
        }}));
        let p = principal(Some(&ctx), None).unwrap();
        assert_eq!(p.id(), "arn:aws:sts::123456789012:assumed-role/dash/x");
        assert_eq!(p.tenant(), Some("123456789012"));
    }

    #[test]
    fn a_jwt_context_names_issuer_and_subject_and_the_tenant_claim() {
        let ctx = context(serde_json::json!({"jwt": {
            "claims": {"iss": "https://idp.example", "sub": "u-42", "org": "plant-7"}, "scopes": null
        }}));
        let p = principal(Some(&ctx), Some("org")).unwrap();
        assert_eq!((p.id(), p.tenant()), ("jwt:https://idp.example#u-42", Some("plant-7")));
        assert_eq!(principal(Some(&ctx), None).unwrap().tenant(), None);
        let no_sub = context(serde_json::json!({"jwt": {"claims": {"iss": "https://idp.example"}}}));
        assert!(principal(Some(&no_sub), None).is_none());
    }

    #[test]
    fn no_authorizer_context_is_no_principal() {
        assert!(principal(Some(&context(serde_json::Value::Null)), None).is_none());
        assert!(principal(None, None).is_none());
    }
}
