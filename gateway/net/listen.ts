/** Binds a server and resolves with the address it got (port 0 asks the OS for a free one). */
import type { Server } from 'node:net';

export function listen(server: Server, port: number, host: string, what: string): Promise<{ port: number; host: string }> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const addr = server.address();
      if (addr === null || typeof addr === 'string') return reject(new Error(`${what} has no address`));
      resolve({ port: addr.port, host: addr.address });
    });
  });
}
