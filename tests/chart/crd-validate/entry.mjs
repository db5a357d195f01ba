// Entry point of validate.cjs (see README.md): validates custom resources read from stdin.
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor, PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const models = [ScaledObject, TriggerAuthentication, ServiceMonitor, PodMonitor];
async function main() {
let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((obj) => {
  const model = models.find((m) => m.apiVersion === obj.apiVersion && m.kind === obj.kind);
  if (!model) return { ok: false, error: `no schema for ${obj.apiVersion} ${obj.kind}` };
  try { new model(obj).validate(); return { ok: true }; }
  catch (e) { return { ok: false, error: String(e.message || e) }; }
});
process.stdout.write(JSON.stringify(results));
}
main();
