// Validate AsyncAPI documents with the reference parser: node validate.mjs FILE...
// Prints, for each file, one JSON line: {"file", "diagnostics": [{"severity", "code", "message", "path"}]}
// (severity 0 error, 1 warning, 2 info, 3 hint). Exits 0 once every file was read.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  const diagnostics = await parser.validate(text);
  const shown = diagnostics.map((d) => ({
    severity: d.severity,
    code: d.code,
    message: d.message,
    path: d.path.join("."),
  }));
  console.log(JSON.stringify({ file, diagnostics: shown }));
}
