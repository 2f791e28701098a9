// Node's `ws` with permessage-deflate, for benches/deflate.py: an echo
// server, and broadcast rooms at /broadcast/ROOM (every member gets every
// message, its sender included, like wsloop --broadcast-to-sender), one thread.
//   node deflate.js --listen 127.0.0.1:PORT [--takeover] [--level N] [--threshold N]
// Without --takeover the server answers server_no_context_takeover and
// client_no_context_takeover (as wsloop --deflate shared does); with it,
// context takeover where the client allows (as wsloop --deflate dedicated).
// --level: zlib level of what the server compresses (default 1, wsloop's);
// --threshold: messages shorter than this go uncompressed (default 1024).
'use strict';
const { WebSocketServer } = require('ws');

let listen = '127.0.0.1:9001';
let takeover = false;
let level = 1;
let threshold = 1024;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--listen') listen = args[++i];
  else if (args[i] === '--takeover') takeover = true;
  else if (args[i] === '--level') level = Number(args[++i]);
  else if (args[i] === '--threshold') threshold = Number(args[++i]);
  else {
    console.error(`unknown argument ${args[i]}`);
    process.exit(2);
  }
}
const colon = listen.lastIndexOf(':');
const host = listen.slice(0, colon).replace(/^\[|\]$/g, '');
const port = Number(listen.slice(colon + 1));
if (!['127.0.0.1', 'localhost', '::1'].includes(host) && !host.startsWith('127.')) {
  console.error(`refusing to listen on ${listen}: benchmark peers are loopback only`);
  process.exit(2);
}

const wss = new WebSocketServer({
  host,
  port,
  maxPayload: 16 << 20,
  perMessageDeflate: {
    zlibDeflateOptions: { level },
    threshold,
    serverNoContextTakeover: !takeover,
    clientNoContextTakeover: !takeover,
    // ws runs zlib on libuv's thread pool; no limit on jobs in flight.
    concurrencyLimit: Infinity,
  },
});
wss.on('listening', () => {
  const a = wss.address();
  console.error(`listening on ${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
});

const rooms = new Map();
wss.on('connection', (ws, req) => {
  ws.on('error', () => {});
  const path = (req.url || '/').split('?')[0];
  if (!path.startsWith('/broadcast')) {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    return;
  }
  const name = path.slice('/broadcast'.length).replace(/^\//, '') || 'default';
  let room = rooms.get(name);
  if (!room) rooms.set(name, (room = new Set()));
  room.add(ws);
  ws.on('close', () => room.delete(ws));
  ws.on('message', (data, isBinary) => {
    for (const member of room) member.send(data, { binary: isBinary });
  });
});
