// A real OpenFeature web client of sluice: the OFREP web provider, which follows the
// `eventStreams` of OFREP bulk responses (ADR 0008) with a standard EventSource.
//
// Usage: node ofrep_sse.mjs BASE_URL FLAG [API_KEY]
// Prints one JSON line when ready and one per ConfigurationChanged event:
//   {"event":"ready"|"changed","value":...,"variant":...,"reason":...,"flags":[...]}
// Exits when stdin closes (or after 120 s).
import { EventSource } from 'eventsource';

globalThis.EventSource = EventSource;
const { OpenFeature, ProviderEvents } = await import('@openfeature/web-sdk');
const { OFREPWebProvider } = await import('@openfeature/ofrep-web-provider');

const [baseUrl, flag, key] = process.argv.slice(2);
const provider = new OFREPWebProvider({
  baseUrl,
  cacheMode: 'disabled',
  pollInterval: 0,
  changeDetection: 'sse',
  ...(key ? { headers: [['Authorization', `Bearer ${key}`]] } : {}),
});
const client = OpenFeature.getClient();
const show = (event, flags) => {
  const d = client.getStringDetails(flag, 'fallback');
  console.log(JSON.stringify({ event, value: d.value, variant: d.variant ?? null, reason: d.reason, flags: flags ?? [] }));
};
client.addHandler(ProviderEvents.ConfigurationChanged, (e) => show('changed', e?.flagsChanged));
await OpenFeature.setContext({ targetingKey: 'user-1' });
await OpenFeature.setProviderAndWait(provider);
show('ready');

const done = () => {
  OpenFeature.close().finally(() => process.exit(0));
};
process.stdin.on('end', done);
process.stdin.resume();
setTimeout(done, 120_000).unref();
