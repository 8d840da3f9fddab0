// Node `ws` broadcast server for the Runwire fanout comparison (bench/server).
// Subscribers send "sub"; a controller sends "burst N" and the server sends N
// pre-built ~250-byte event frames to every subscriber, one frame per event.
const { WebSocketServer } = require('ws');

const subs = new Set();
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });

function frame(seq) {
  return JSON.stringify({
    type: 'event',
    event: {
      event_id: '0193b8a0-7c1e-7d2a-9f00-' + String(seq).padStart(12, '0'),
      run_id: 'bench-run',
      seq: seq,
      type: 'run.progress',
      time: '2026-11-22T02:30:00.000Z',
      data: { percent: 42.5, step: 'Compiling crate 17 of 40', current: 17, total: 40, message: 'building' },
    },
  });
}

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const text = data.toString();
    if (text === 'sub') {
      subs.add(ws);
      ws.send('ok');
    } else if (text.startsWith('burst ')) {
      const n = parseInt(text.slice(6), 10);
      for (let i = 1; i <= n; i++) {
        const f = frame(i);
        for (const s of subs) s.send(f);
      }
    }
  });
  ws.on('close', () => subs.delete(ws));
});

wss.on('listening', () => {
  console.log(`127.0.0.1:${wss.address().port}`);
});
