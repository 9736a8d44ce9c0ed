// E2E client: unmodified AWS JS SDK v3 (default credential chain). Prints GetCallerIdentity as
// JSON; `--loop N` repeats every second and exits non-zero on the first error.
// CommonJS so that NODE_PATH (the pinned install in e2e/.work/node) resolves the SDK.
const { STSClient, GetCallerIdentityCommand } = require("@aws-sdk/client-sts");

async function main() {
  const i = process.argv.indexOf("--loop");
  const loopFor = i >= 0 ? Number(process.argv[i + 1]) : 0;
  const client = new STSClient({});
  const start = Date.now();
  for (;;) {
    const out = await client.send(new GetCallerIdentityCommand({}));
    console.log(JSON.stringify({ Arn: out.Arn, Account: out.Account }));
    if ((Date.now() - start) / 1000 >= loopFor) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
