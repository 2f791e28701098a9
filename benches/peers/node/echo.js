// Echo server on Node's `ws` (with `bufferutil` for masking), one thread.
//   node echo.js --listen 127.0.0.1:PORT [--tls-cert FILE --tls-key FILE]
// With a certificate and key (PEM), it serves wss:// over Node's https.
// Every text and binary message comes back unchanged, as one frame.
'use strict';
const { WebSocketServer } = require('ws');

let listen = '127.0.0.1:9001';
let tlsCert = null;
let tlsKey = null;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--listen') listen = args[++i];
  else if (args[i] === '--tls-cert') tlsCert = args[++i];
  else if (args[i] === '--tls-key') tlsKey = args[++i];
  else if (args[i].startsWith('--listen=')) listen = args[i].slice('--listen='.length);
  else if (!args[i].startsWith('-')) listen = args[i];
  else {
    console.error(`unknown argument ${args[i]}`);
    process.exit(2);
  }
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));
if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host) && !host.startsWith('127.')) {
  console.error(`refusing to listen on ${listen}: benchmark peers are loopback only`);
  process.exit(2);
}

// No permessage-deflate (the default), the same as every other server here.
const bindHost = host.replace(/^\[|\]$/g, '');
let wss;
const announce = (a) => console.error(`listening on ${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
if (tlsCert && tlsKey) {
  const fs = require('fs');
  const server = require('https').createServer({ cert: fs.readFileSync(tlsCert), key: fs.readFileSync(tlsKey) });
  wss = new WebSocketServer({ server, maxPayload: 16 << 20 });
  server.listen(port, bindHost, () => announce(server.address()));
} else {
  wss = new WebSocketServer({ host: bindHost, port, maxPayload: 16 << 20 });
  wss.on('listening', () => announce(wss.address()));
}
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
