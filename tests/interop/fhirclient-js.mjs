// SMART on FHIR's JavaScript `fhirclient` (npm, pinned in package.json) against the
// gateway's /fhir, through its server-side (Node) API: a standalone launch
// (`authorize` with `iss` = the gateway's /fhir, PKCE required) and `ready` on the
// callback, exactly as an Express app would run them; the two HTTP exchanges with the
// app itself are played by small request/response objects. The authorization server
// auto-approves with `login_hint`.
//
// Then: read the Patient (client.patient.read), search Observations with paging
// (client.request with pageLimit 0 follows every `next` link), and be refused another
// patient's Patient (404).
//
//   node tests/interop/fhirclient-js.mjs --fhir http://127.0.0.1:8080/fhir --patient pat-3 --other pat-1

import { parseArgs } from 'node:util';
import smart from 'fhirclient';

const { values: args } = parseArgs({
  options: {
    fhir: { type: 'string' },
    patient: { type: 'string', default: 'pat-3' },
    other: { type: 'string', default: 'pat-1' },
    'client-id': { type: 'string', default: 'demo-app' },
    'no-upstream-paging': { type: 'boolean', default: false },
  },
});

function expect(condition, what) {
  if (!condition) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
  console.log(`  ok: ${what}`);
}

// The app's session storage (what express-session would hold).
const session = new Map();
const storage = {
  get: async (key) => session.get(key),
  set: async (key, value) => {
    session.set(key, value);
    return value;
  },
  unset: async (key) => session.delete(key),
};
const APP = '127.0.0.1:9'; // the app's own origin: never contacted

function exchange(path) {
  const req = { url: path, headers: { host: APP }, socket: {} };
  const res = {
    status: 0,
    headers: {},
    writeHead(status, headers) {
      this.status = status;
      this.headers = headers;
    },
    end() {},
  };
  return { req, res };
}

const fhir = args.fhir.replace(/\/$/, '');

// 1. The app's launch route: redirects the browser to the authorization server.
const launch = exchange('/launch');
await smart(launch.req, launch.res, storage).authorize({
  iss: fhir,
  clientId: args['client-id'],
  scope: 'launch/patient openid fhirUser patient/*.rs',
  redirectUri: '/callback',
  pkceMode: 'required',
});
expect(launch.res.status === 302 && launch.res.headers.location, 'authorize() redirects to the discovered authorize endpoint');

// 2. The browser at the authorization server (auto-approved for the patient).
const authorize = new URL(launch.res.headers.location);
expect(authorize.searchParams.get('aud') === fhir, 'aud is the gateway /fhir');
expect(authorize.searchParams.get('code_challenge_method') === 'S256', 'PKCE S256');
authorize.searchParams.set('login_hint', args.patient);
// The sandbox approves in one redirect; oidc-provider goes through its login and consent
// interactions first (with its cookies), like a browser would.
const cookies = new Map();
let url = authorize;
let back;
for (let hop = 0; hop < 10 && !back; hop++) {
  const cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  const answer = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
  for (const c of answer.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    cookies.set(pair.slice(0, i), pair.slice(i + 1));
  }
  expect([302, 303].includes(answer.status), `the authorization server redirects (${answer.status})`);
  url = new URL(answer.headers.get('location'), url);
  if (url.href.startsWith(`http://${APP}/callback`)) back = url;
}
expect(back?.searchParams.get('code'), 'the authorization server approves and sends the code back');

// 3. The app's callback route: exchanges the code.
const callback = exchange(`/callback${back.search}`);
const client = await smart(callback.req, callback.res, storage).ready();
expect(client.patient.id === args.patient, `ready(): token for ${args.patient}`);

const patient = await client.patient.read();
expect(patient.id === args.patient, `client.patient.read() (${patient.resourceType}/${patient.id})`);

const firstPage = await client.request(`Observation?patient=${args.patient}&_count=5`);
const first = (firstPage.entry ?? []).length;
expect(first > 0 && first <= 5, `Observation search, first page of ${first}`);
const all = await client.request(`Observation?patient=${args.patient}&_count=5`, { pageLimit: 0, flat: true });
const ids = all.map((o) => o.id);
if (args['no-upstream-paging']) {
  expect(ids.length === first, `one page without upstream links (${ids.length})`);
} else {
  expect(ids.length > first && new Set(ids).size === ids.length, `pageLimit 0 follows the gateway's next links (${ids.length})`);
}
expect(all.every((o) => o.subject?.reference === `Patient/${args.patient}`), "every Observation is the patient's");

try {
  await client.request(`Patient/${args.other}`);
  expect(false, `Patient/${args.other} is refused`);
} catch (e) {
  expect(e.status === 404 || e.statusCode === 404, `Patient/${args.other} is refused (${e.status ?? e.statusCode})`);
}
console.log('fhirclient (JS): all checks passed');
