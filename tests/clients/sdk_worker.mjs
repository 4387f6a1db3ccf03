// @camunda8/sdk 8.8 gRPC client against waggle dev, driven by test_camunda8_sdk.py.
//
// Configured only through the environment the SDK documents for a plaintext, unauthenticated gateway:
//   ZEEBE_GRPC_ADDRESS=grpc://127.0.0.1:PORT  CAMUNDA_OAUTH_STRATEGY=NONE
// Deploys two models, starts instances, completes their jobs with a polling worker (ActivateJobs) and a
// streaming worker (StreamActivatedJobs), runs one instance with result, and prints a JSON summary on
// stdout's last line. Exits 0 when the summary is complete, 1 on an error or when the deadline passes.
import { Camunda8 } from '@camunda8/sdk'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

// The SDK hard-codes gzip for request messages ('grpc.default_compression_algorithm': 2). With
// SDK_IDENTITY_ENCODING=1 the script sends uncompressed messages instead, so that the rest of the SDK's
// behaviour can be checked apart from compression support. Off by default: real users send gzip.
if (process.env.SDK_IDENTITY_ENCODING === '1') {
  const require = createRequire(import.meta.url)
  const { CompressionFilter } = require('@grpc/grpc-js/build/src/compression-filter.js')
  const identity = {
    async writeMessage(message) {
      const framed = Buffer.allocUnsafe(message.length + 5)
      framed.writeUInt8(0, 0)
      framed.writeUInt32BE(message.length, 1)
      message.copy(framed, 5)
      return framed
    },
  }
  const sendMetadata = CompressionFilter.prototype.sendMetadata
  CompressionFilter.prototype.sendMetadata = function (metadata) {
    this.currentCompressionAlgorithm = 'identity'
    this.sendCompression = identity
    return sendMetadata.call(this, metadata)
  }
}

const here = path.dirname(fileURLToPath(import.meta.url))
const count = Number(process.env.SDK_INSTANCES ?? 5)
const deadlineMs = Number(process.env.SDK_DEADLINE_MS ?? 30000)

const summary = { errors: [], step: 'start' }
const c8 = new Camunda8()
const zbc = c8.getZeebeGrpcApiClient()
const workers = []

async function main() {
  summary.step = 'topology'
  const topology = await zbc.topology()
  summary.topology = {
    clusterSize: topology.clusterSize,
    partitionsCount: topology.partitionsCount,
    brokers: topology.brokers.length,
    roles: topology.brokers.flatMap((b) => b.partitions.map((p) => `${p.partitionId}:${p.role}:${p.health}`)),
  }

  summary.step = 'deployResource'
  const hello = await zbc.deployResource({ processFilename: path.join(here, 'bpmn', 'c8js__hello-world-complete.bpmn') })
  const stream = await zbc.deployResource({ processFilename: path.join(here, 'bpmn', 'sdk-stream.bpmn') })
  summary.deployed = [hello, stream].map((d) => ({
    bpmnProcessId: d.deployments[0].process.bpmnProcessId,
    version: d.deployments[0].process.version,
    processDefinitionKey: String(d.deployments[0].process.processDefinitionKey),
  }))

  const polled = new Set()
  const streamed = new Set()
  const headers = []

  summary.step = 'createWorker'
  workers.push(zbc.createWorker({
    taskType: 'console-log-complete',
    worker: 'sdk-polling-worker',
    timeout: 30000,
    longPoll: 2000,
    pollInterval: 100,
    taskHandler: (job) => {
      polled.add(String(job.processInstanceKey))
      headers.push(job.customHeaders)
      return job.complete({ completedBy: 'sdk-polling', seen: job.variables.n })
    },
  }))

  workers.push(await zbc.streamJobs({
    type: 'sdk-stream',
    worker: 'sdk-stream-worker',
    timeout: 30000,
    pollInterval: 1000,
    taskHandler: (job) => {
      streamed.add(String(job.processInstanceKey))
      return job.complete({ completedBy: 'sdk-stream' })
    },
  }))

  summary.step = 'createProcessInstance'
  const helloKeys = []
  const streamKeys = []
  for (let n = 0; n < count; n++) {
    const a = await zbc.createProcessInstance({ bpmnProcessId: 'hello-world-complete', variables: { n } })
    helloKeys.push(String(a.processInstanceKey))
    const b = await zbc.createProcessInstance({ bpmnProcessId: 'sdk-stream', variables: { n } })
    streamKeys.push(String(b.processInstanceKey))
  }
  summary.created = { hello: helloKeys, stream: streamKeys }

  summary.step = 'createProcessInstanceWithResult'
  const withResult = await zbc.createProcessInstanceWithResult({
    bpmnProcessId: 'hello-world-complete',
    variables: { n: 'result' },
    requestTimeout: 20000,
  })
  summary.withResult = { processInstanceKey: String(withResult.processInstanceKey), variables: withResult.variables }

  summary.step = 'waiting for the workers'
  const until = Date.now() + deadlineMs
  const allDone = () => helloKeys.every((k) => polled.has(k)) && streamKeys.every((k) => streamed.has(k))
  while (!allDone() && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  summary.completed = {
    hello: helloKeys.filter((k) => polled.has(k)),
    stream: streamKeys.filter((k) => streamed.has(k)),
  }
  summary.headers = headers[0] ?? null
  summary.step = 'done'
  return allDone()
}

let ok = false
try {
  ok = await main()
} catch (e) {
  summary.errors.push(String(e?.stack ?? e))
}
for (const w of workers) {
  try {
    await w.close()
  } catch (e) {
    summary.errors.push(`closing a worker: ${e}`)
  }
}
try {
  await zbc.close(5000)
} catch (e) {
  summary.errors.push(`closing the client: ${e}`)
}
process.stdout.write('\nSUMMARY ' + JSON.stringify(summary) + '\n')
process.exit(ok && summary.errors.length === 0 ? 0 : 1)
