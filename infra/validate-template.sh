#!/usr/bin/env bash
# validate-template.sh — check the AWS SAM template offline: no AWS account, credentials or Docker.
#
# Usage: infra/validate-template.sh [template [translated.json]]
#   template         default <repo>/template.yaml
#   translated.json  where to keep the translated CloudFormation template (JSON), e.g. for tests
#
#   1. cfn-lint on the SAM template as written (it applies the SAM transform itself), with AWS's serverless
#      rules (cfn-lint-serverless) when they install;
#   2. the SAM transform by aws-sam-translator (the library `sam deploy` and CloudFormation use): it
#      rejects what SAM cannot translate, and writes the plain CloudFormation template;
#   3. cfn-lint on that translated template. This is the step that catches a mistyped value inside a
#      SAM property (e.g. `InvokeMode: STREAMING` in FunctionUrlConfig), which SAM passes through
#      unchecked and cfn-lint on the SAM template does not see.
#
# Exits non-zero on any error (cfn-lint warnings count as errors); prints what it checked.
# Installs cfn-lint and aws-sam-translator (pinned) into a virtualenv under
# ${TRACE_CACHE_DIR:-~/.cache/trace-jobs} on first use (~30 s; needs a python3 >= 3.9 with venv).
set -euo pipefail

readonly CFN_LINT_VERSION=1.58.0
readonly SAM_TRANSLATOR_VERSION=1.115.0
readonly SERVERLESS_RULES_VERSION=0.3.6
readonly PIP_SPEC=("cfn-lint==${CFN_LINT_VERSION}" "aws-sam-translator==${SAM_TRANSLATOR_VERSION}")
# AWS's serverless rules for cfn-lint (the cfn-lint-serverless package), in a venv of their own so that
# the check goes on without them when they cannot be installed (e.g. offline).
readonly RULES_PIP_SPEC=("${PIP_SPEC[@]}" "cfn-lint-serverless==${SERVERLESS_RULES_VERSION}")
# Serverless rules that do not apply here, each with its reason:
#   ES6000  "SQS queue should have a RedrivePolicy": said of the dead-letter queues themselves (and of
#           BackfillFailureQueue, the backfill's failure destination); every work queue has one
#           (tests/it/template.rs checks it);
#   WS1004  "function without a log group with retention": the rule looks only for log groups named
#           /aws/lambda/<function>; each function names its own in LoggingConfig.LogGroup, retention
#           LogRetentionDays (tests/it/template.rs checks it).
#   ES1001  "event source mapping without DestinationConfig.OnFailure": SQS mappings cannot have one (it
#           is for streams); a failing message goes to the queue's dead-letter queue (its redrive policy).
readonly SERVERLESS_IGNORED=(ES1001 ES6000 WS1004)

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
TEMPLATE="${1:-$REPO_ROOT/template.yaml}"
KEEP_TRANSLATED="${2:-}"
VENV_NAME="venv-template-check"

say() { printf '%s\n' "$*" >&2; }
die() { say "validate-template: error: $*"; exit 1; }

[[ -f "$TEMPLATE" ]] || die "no template at $TEMPLATE"

# find_python, ensure_venv, CACHE_DIR
# shellcheck source=infra/lib.sh
source "$SCRIPT_DIR/lib.sh"
VENV="$CACHE_DIR/$VENV_NAME"

# cfn-lint 1.x needs Python >= 3.9.
python="$(find_python 9)" || die "no python3 >= 3.9 with the venv module found (on Debian: apt-get install -y python3 python3-venv)"
ensure_venv validate-template "$VENV_NAME" "$python" "~30 s" "${PIP_SPEC[@]}"
RULES_VENV="$CACHE_DIR/$VENV_NAME-serverless"
rules=()
if (ensure_venv validate-template "$VENV_NAME-serverless" "$python" "~30 s" "${RULES_PIP_SPEC[@]}") 2>"$CACHE_DIR/serverless-rules.err"; then
  LINT="$RULES_VENV/bin/cfn-lint"
  rules=(--append-rules cfn_lint_serverless.rules --ignore-checks "${SERVERLESS_IGNORED[@]}")
else
  LINT="$VENV/bin/cfn-lint"
  say "validate-template: the serverless rules (cfn-lint-serverless==$SERVERLESS_RULES_VERSION) could not be installed (offline?): going on without them"
  sed 's/^/  | /' "$CACHE_DIR/serverless-rules.err" | tail -n 5 >&2
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
TRANSLATED="$WORK/translated.json"

# Offline: no credentials, no network; a region for the partition of ARNs.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ENDPOINT_URL

status=0
say "== validate-template: $TEMPLATE (cfn-lint $CFN_LINT_VERSION, aws-sam-translator $SAM_TRANSLATOR_VERSION, serverless rules: $(((${#rules[@]})) && echo "cfn-lint-serverless $SERVERLESS_RULES_VERSION" || echo none))"

say "-- 1/3 cfn-lint on the SAM template"
if "$LINT" --format parseable "${rules[@]}" -- "$TEMPLATE" >&2; then
  say "   ok"
else
  say "   FAILED"; status=1
fi

say "-- 2/3 SAM transform (aws-sam-translator)"
if "$VENV/bin/python" - "$TEMPLATE" "$TRANSLATED" <<'EOF'
import json
import sys

from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class OfflinePolicies:
    """Managed policy names would be looked up in IAM; the template uses ARNs and policy templates only."""

    def load(self):
        return {}


def packaged(template):
    """What `sam package` does before a deploy: local code and definition paths become S3 locations."""
    for name, resource in template.get("Resources", {}).items():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            value = properties.get(key)
            if isinstance(value, str) and not value.startswith("s3://"):
                properties[key] = f"s3://offline-validation/{name}.zip"
    globals_ = template.get("Globals", {}).get("Function", {})
    if isinstance(globals_.get("CodeUri"), str):
        globals_["CodeUri"] = "s3://offline-validation/code.zip"
    return template


source, target = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as f:
    template = packaged(yaml_parse(f.read()))
try:
    translated = transform(template, {}, OfflinePolicies())
except InvalidDocumentException as e:
    for cause in e.causes:
        print(f"   {source}: SAM: {cause.message}", file=sys.stderr)
    sys.exit(1)
with open(target, "w", encoding="utf-8") as f:
    json.dump(translated, f, indent=1)
resources = translated.get("Resources", {})
kinds = {}
for r in resources.values():
    kinds[r["Type"]] = kinds.get(r["Type"], 0) + 1
summary = ", ".join(f"{n} {t}" for t, n in sorted(kinds.items()))
print(f"   ok: {len(resources)} resources: {summary}", file=sys.stderr)
EOF
then
  if [[ -n "$KEEP_TRANSLATED" ]]; then cp "$TRANSLATED" "$KEEP_TRANSLATED"; fi
  say "-- 3/3 cfn-lint on the translated CloudFormation template"
  # Findings are shown by their path in the translated template: resource names are the SAM
  # template's, plus those SAM generates (StreamFunctionUrl, WorkerHeavyFunctionHeavy, ...Role).
  if "$LINT" --format json "${rules[@]}" -- "$TRANSLATED" >"$WORK/findings.json" 2>"$WORK/lint.err"; then
    say "   ok"
  else
    if ! "$VENV/bin/python" - "$WORK/findings.json" >&2 <<'EOF'; then
import json
import sys

findings = json.load(open(sys.argv[1], encoding="utf-8"))
for f in findings:
    path = "/".join(str(p) for p in f["Location"].get("Path") or [])
    print(f"   {path}: {f['Rule']['Id']} {f['Message']}")
sys.exit(0 if findings else 1)
EOF
      cat "$WORK/findings.json" "$WORK/lint.err" >&2
    fi
    say "   FAILED (SAM passes these values through unchecked: fix them in $TEMPLATE)"; status=1
  fi
else
  say "   FAILED"; status=1
  say "-- 3/3 skipped: nothing to lint"
fi

if ((status == 0)); then
  say "== validate-template: $TEMPLATE is valid"
else
  say "== validate-template: $TEMPLATE has errors"
fi
exit "$status"
