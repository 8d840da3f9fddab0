#!/usr/bin/env node
// Receive pipeline of @runwire/client under Node: `npm run bench` (see receive-core.mjs).
import { runBench } from "./receive-core.mjs";

console.log(`node ${process.version}`);
console.log(JSON.stringify(await runBench(), null, 2));
