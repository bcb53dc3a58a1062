/**
 * What a Service gives a webhook with several replicas: one address, connections spread
 * over the ready endpoints. In a cluster kube-proxy does it with the node's packet
 * filter, which cannot run here; this forwards TCP on 127.0.0.1 (TLS passes through
 * untouched, so the API server still verifies the replica's own certificate). Each new
 * connection goes to the next endpoint in turn; the test sets the endpoints as the
 * endpoints controller would (a replica leaves them when it stops being ready).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TcpBalancer {
  /** 127.0.0.1:PORT */
  readonly address: string;
  /** The ports new connections go to (in turn). */
  setEndpoints(ports: number[]): void;
  /** Connections accepted per endpoint port so far. */
  readonly connections: Map<number, number>;
  close(): Promise<void>;
}

export async function startTcpBalancer(endpoints: number[] = []): Promise<TcpBalancer> {
  let ports = [...endpoints];
  let next = 0;
  const sockets = new Set<Socket>();
  const connections = new Map<number, number>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    if (ports.length === 0) {
      client.destroy();
      return;
    }
    const port = ports[next++ % ports.length] as number;
    connections.set(port, (connections.get(port) ?? 0) + 1);
    const upstream = connect({ host: '127.0.0.1', port });
    sockets.add(upstream);
    upstream.once('close', () => sockets.delete(upstream));
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    connections,
    setEndpoints: (p) => {
      ports = [...p];
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
