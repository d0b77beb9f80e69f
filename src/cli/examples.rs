//! The examples `--help` ends with, one constant per command: what people
//! type most, each line runnable as shown.

pub(super) const VALIDATE: &str = "\
Examples:
  reconcile validate                         # the current directory, recursively
  reconcile validate manifests/web.yaml      # one file
  reconcile validate git+https://git.example.com/ops/fleet.git --ref main --path prod
  reconcile validate . --format json | jq '.diagnostics[] | .message'";

pub(super) const PLAN: &str = "\
Examples:
  reconcile plan manifests/                  # against the local Docker engine
  reconcile plan manifests/ --out web.plan   # save it; `reconcile apply web.plan` applies exactly it
  reconcile plan manifests/ --detailed-exitcode || echo changes or error
  reconcile plan --controller https://ctl:7700 --ca-hash sha256:…   # what the controller applies next";

pub(super) const APPLY: &str = "\
Examples:
  reconcile apply manifests/                 # shows the plan, asks, applies, waits for steady state
  reconcile apply manifests/ --auto-approve  # in scripts: no question
  reconcile apply web.plan                   # a saved plan, refused when what runs moved since
  reconcile apply --controller https://ctl:7700   # the controller reconciles now; waits for its rollouts";

pub(super) const STATUS: &str = "\
Examples:
  reconcile status manifests/
  reconcile status manifests/ --format json | jq '.services[] | {service, running}'
  reconcile status --controller https://ctl:7700";

pub(super) const EVENTS: &str = "\
Examples:
  reconcile events manifests/ --service web
  reconcile events --controller https://ctl:7700 --follow
  reconcile events --controller https://ctl:7700 --service prod/web --since 30m --format json";

pub(super) const HISTORY: &str = "\
Examples:
  reconcile history web manifests/
  reconcile history prod/web --controller https://ctl:7700";

pub(super) const ROLLBACK: &str = "\
Examples:
  reconcile rollback web manifests/           # to the last COMPLETED deployment before this one
  reconcile rollback web manifests/ --to 3    # to revision 3
  reconcile rollback prod/web --controller https://ctl:7700";

pub(super) const DESTROY: &str = "\
Examples:
  reconcile destroy manifests/               # shows what goes, asks, removes it
  reconcile destroy manifests/ --auto-approve
  reconcile destroy --controller https://ctl:7443   # the fleet, until `reconcile resume`";

pub(super) const IMPORT: &str = "\
Examples:
  aws ecs describe-task-definition --task-definition web > web.json
  reconcile import ecs web.json --out manifests/
  reconcile import ecs taskdefs/*.json services.json --out manifests/";

pub(super) const CONTROLLER: &str = "\
Examples:
  RECONCILE_JOIN_TOKEN=… RECONCILE_API_TOKEN=… \\
    reconcile controller --source git+https://git.example.com/ops/fleet.git --ref main --data-dir /var/lib/reconcile
  reconcile controller --source ./manifests --listen 0.0.0.0:7700";

pub(super) const AGENT: &str = "\
Examples:
  RECONCILE_JOIN_TOKEN=… reconcile agent --controller https://ctl:7700 --ca-hash sha256:… \\
    --cluster prod --attribute zone=a";

pub(super) const NODE: &str = "\
Examples:
  reconcile node drain node2 --controller https://ctl:7700
  reconcile node activate node2 --controller https://ctl:7700";

pub(super) const SECRET: &str = "\
Examples:
  printf %s \"$DB_PASSWORD\" | reconcile secret set db-password --controller https://ctl:7700
  reconcile secret set tls-key --from-file key.pem --controller https://ctl:7700
  reconcile secret list --controller https://ctl:7700";

pub(super) const STORE: &str = "\
Examples:
  reconcile store copy --from /var/lib/reconcile/controller --to etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
  reconcile store copy --from etcd://10.0.0.1:2379 --store-prefix /reconcile/prod --to /srv/backup/controller";

pub(super) const TOKEN: &str = "\
Examples:
  reconcile token create ci --role operator --ttl 90d --controller https://ctl:7700
  reconcile token list --controller https://ctl:7700";

pub(super) const COMPLETIONS: &str = "\
Examples:
  reconcile completions bash > /etc/bash_completion.d/reconcile
  reconcile completions zsh > \"${fpath[1]}/_reconcile\"
  reconcile completions fish > ~/.config/fish/completions/reconcile.fish";

pub(super) const MAN: &str = "\
Examples:
  reconcile man --out /usr/local/share/man/man1 && man reconcile-apply";

pub(super) const RUN_TASK: &str = "\
Examples:
  reconcile run-task migrate --cluster prod --wait          # exits with the task's exit code
  reconcile run-task report:4 --cluster prod --count 5 --placement-strategy spread:attribute:zone
  reconcile run-task report --cluster prod --override 'app.command=[\"./report\",\"--all\"]' --override app.env.MODE=full
  reconcile run-task migrate --cluster prod --wait --controller https://ctl:7700";

pub(super) const TASKS: &str = "\
Examples:
  reconcile tasks                                          # this directory's source, local engine
  reconcile tasks --status STOPPED --family report         # exit codes and stop reasons
  reconcile tasks --started-by schedule/nightly --controller https://ctl:7700";

pub(super) const STOP_TASK: &str = "\
Examples:
  reconcile stop-task 3f2a9c1e --reason \"superseded by a newer run\"
  reconcile stop-task 3f2a9c1e0b7d --controller https://ctl:7700";
