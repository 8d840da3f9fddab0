// Validates the generated API documents of schema/v1 (run by `npm test` here, and by
// .ci/run): asyncapi.yaml with the AsyncAPI parser (every `$ref` to a JSON Schema of the
// folder resolved), openapi.yaml with an OpenAPI 3.1 validator. Any diagnostic of
// severity error fails.
//
// `node validate.mjs --self-test` first proves that the check can fail: it validates
// broken copies of both documents (in a temporary copy of schema/v1) and fails unless
// every broken copy is rejected.

import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Parser, fromFile } from "@asyncapi/parser";
import { validate as validateOpenApi } from "@readme/openapi-parser";

const here = dirname(fileURLToPath(import.meta.url));
const schemaDir = join(here, "..", "..", "v1");
const ERROR = 0; // Spectral's severity of an error.

/** The errors of an AsyncAPI document, as strings; none when it is valid. */
async function asyncapiErrors(file) {
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  const errors = diagnostics
    .filter((d) => d.severity === ERROR)
    .map((d) => `${d.code}: ${d.message} at /${d.path.join("/")}`);
  if (!document && errors.length === 0) errors.push("the parser returned no document");
  if (document) {
    // The payloads must be resolved schemas, not dangling references.
    for (const message of document.allMessages()) {
      const payload = message.payload();
      if (!payload || payload.type() === undefined && payload.oneOf() === undefined) {
        errors.push(`message ${message.id()}: payload not resolved`);
      }
    }
  }
  return errors;
}

/** The errors of an OpenAPI 3.1 document; none when it is valid. */
async function openapiErrors(file) {
  let result;
  try {
    result = await validateOpenApi(file);
  } catch (e) {
    // An unresolvable `$ref` is thrown rather than reported.
    return [String(e?.message ?? e)];
  }
  if (result.valid) return [];
  return (result.errors ?? [{ message: "invalid" }]).map((e) => e.message);
}

async function check(dir) {
  const failures = {};
  failures["asyncapi.yaml"] = await asyncapiErrors(join(dir, "asyncapi.yaml"));
  failures["openapi.yaml"] = await openapiErrors(join(dir, "openapi.yaml"));
  return failures;
}

/** Broken variants: [name, file, edit of its text]. Each must be rejected. */
const BROKEN = [
  ["asyncapi: a payload $ref to a missing schema", "asyncapi.yaml",
    (t) => t.replace("./client/hello.reader.schema.json", "./client/missing.reader.schema.json")],
  ["asyncapi: an operation without its action", "asyncapi.yaml",
    (t) => t.replace(/^( {4})action: receive\n/m, "")],
  ["asyncapi: an unknown top-level member", "asyncapi.yaml",
    (t) => t.replace(/^channels:/m, "chanels:")],
  ["openapi: a body $ref to a missing schema", "openapi.yaml",
    (t) => t.replace("./http/append-request.reader.schema.json", "./http/missing.reader.schema.json")],
  ["openapi: a response without a description", "openapi.yaml",
    (t) => t.replace(/^ {6}description: "The event store is unavailable.*\n/m, "")],
  ["openapi: a path parameter that is not required", "openapi.yaml",
    (t) => t.replace(/^( +)required: true\n/m, "$1required: false\n")],
];

async function selfTest() {
  let ok = true;
  for (const [name, file, edit] of BROKEN) {
    const dir = await mkdtemp(join(tmpdir(), "runwire-schema-check-"));
    try {
      await cp(schemaDir, dir, { recursive: true });
      const path = join(dir, file);
      const text = await readFile(path, "utf8");
      const broken = edit(text);
      if (broken === text) {
        console.error(`self-test: "${name}": the edit changed nothing; update the self-test`);
        ok = false;
        continue;
      }
      await writeFile(path, broken);
      const errors = (await check(dir))[file];
      if (errors.length === 0) {
        console.error(`self-test: "${name}" was accepted`);
        ok = false;
      } else {
        console.log(`self-test: "${name}" rejected: ${errors[0]}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return ok;
}

let ok = true;
if (process.argv.includes("--self-test")) ok = await selfTest();
for (const [file, errors] of Object.entries(await check(schemaDir))) {
  if (errors.length === 0) {
    console.log(`${file}: valid`);
  } else {
    ok = false;
    for (const e of errors) console.error(`${file}: ${e}`);
  }
}
process.exit(ok ? 0 : 1);
