// A client nobody here wrote: the MCP TypeScript SDK's Client over stdio,
// driving `banger mcp`. Run by TestIntegrationLiveMCPNodeClient from a
// directory holding node_modules/@modelcontextprotocol/sdk. argv: the
// server's command line. It prints one JSON transcript on stdout.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [command, ...args] = process.argv.slice(2);
const vm = process.env.MCP_TEST_VM;
const repo = process.env.MCP_TEST_REPO;
const transcript = { server: null, tools: [], calls: [] };

const client = new Client({ name: "banger-live-node-client", version: "1.0.0" });
await client.connect(new StdioClientTransport({ command, args, stderr: "inherit" }));
transcript.server = client.getServerVersion();

const { tools } = await client.listTools();
transcript.tools = tools.map((t) => ({ name: t.name, description: t.description, required: t.inputSchema?.required ?? [] }));

async function call(name, args) {
  const res = await client.callTool({ name, arguments: args });
  transcript.calls.push({ name, arguments: args, isError: res.isError ?? false, structuredContent: res.structuredContent ?? null,
    text: (res.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n") });
  return res;
}

try {
  await call("create_vm", { name: vm, ttl_seconds: 1800, workspace: repo });
  await call("exec", { vm, command: "uname -sr; echo from-node > /root/made-by-exec; cd /root/work && echo 'changed in the guest' >> a.txt && echo new > added.txt; exit 7" });
  await call("write_file", { vm, path: "/root/node/hello.txt", content: "written by the TypeScript SDK\n" });
  await call("read_file", { vm, path: "/root/node/hello.txt" });
  await call("read_file", { vm, path: "/root/made-by-exec" });
  if (tools.some((t) => t.name === "diff")) {
    await call("diff", { vm, repo, apply: true });
  } else {
    transcript.calls.push({ name: "diff", skipped: "the server has no diff tool" });
  }
  // bad input: a tool error, not a crash
  await call("exec", { vm: "no-such-vm-" + vm, command: "true" });
} finally {
  await call("delete_vm", { vm });
  await call("list_vms", {});
  await client.close();
}
process.stdout.write(JSON.stringify(transcript, null, 2) + "\n");
