// Validates custom resources read from stdin (a JSON array) against their CRDs' OpenAPI
// schemas and prints one `{"ok": bool, "error"?: string}` per object (see README.md).
// Argument: the node_modules folder where scripts/test-services.sh installed this folder's
// package-lock.json; the models are imported from there by path.
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const load = (file) => import(pathToFileURL(path.join(modules, file)).href);
const { ScaledObject, TriggerAuthentication } = await load(
  "@kubernetes-models/keda/keda.sh/v1alpha1/index.js");
const { ServiceMonitor, PodMonitor } = await load(
  "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js");
const models = [ScaledObject, TriggerAuthentication, ServiceMonitor, PodMonitor];

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((obj) => {
  const model = models.find((m) => m.apiVersion === obj.apiVersion && m.kind === obj.kind);
  if (!model) return { ok: false, error: `no schema for ${obj.apiVersion} ${obj.kind}` };
  try { new model(obj).validate(); return { ok: true }; }
  catch (e) { return { ok: false, error: String(e.message || e) }; }
});
process.stdout.write(JSON.stringify(results));
