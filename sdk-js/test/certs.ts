/**
 * A test CA and server certificates for 127.0.0.1 and localhost, made with the `openssl`
 * command (Debian's openssl package), for the TLS tests.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./harness.js";

export interface TestCa {
  dir: string;
  /** The CA certificate (PEM), for clients to trust. */
  caPem: string;
  caPath: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

export function makeCa(name = "roomd test CA"): TestCa {
  const dir = tempDir("ca");
  openssl(
    ["req", "-x509", ...EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", `/CN=${name}`,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    dir,
  );
  const caPath = join(dir, "ca.pem");
  return { dir, caPath, caPem: readFileSync(caPath, "utf8") };
}

/** Issues a server certificate; returns the paths of its chain and key (in the CA's dir). */
export function issue(ca: TestCa, name: string): { cert: string; key: string } {
  const ext = join(ca.dir, `${name}.ext`);
  writeFileSync(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n");
  openssl(["req", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`], ca.dir);
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out", `${name}.pem`, "-extfile", ext], ca.dir);
  return { cert: join(ca.dir, `${name}.pem`), key: join(ca.dir, `${name}.key`) };
}

/** The `[tls]` section for a certificate. */
export function tlsConfig(c: { cert: string; key: string }): string {
  return `[tls]\ncert = ${JSON.stringify(c.cert)}\nkey = ${JSON.stringify(c.key)}\n`;
}
