// The agent: a plain `openai` chat loop with one tool. It knows nothing of Agent Lightning: it reads
// a task, talks to whatever OpenAI-compatible endpoint it is given, and returns a reward. The tool
// call is traced with the OpenTelemetry API, as any instrumented Node.js code would be.

import OpenAI from "openai";
import { SpanStatusCode, trace } from "@opentelemetry/api";

const MAX_TURNS = 4;

const SYSTEM_PROMPT =
  "You solve arithmetic word problems. Use the calculator tool for any multiplication or any " +
  "number larger than 100, then reply with the final number as 'Answer: <number>'.";

const CALCULATOR_TOOL = {
  type: "function",
  function: {
    name: "calculator",
    description: "Evaluate an arithmetic expression with + - * / and parentheses, e.g. '(12 + 3) * 4'.",
    parameters: {
      type: "object",
      properties: { expression: { type: "string", description: "The expression to evaluate." } },
      required: ["expression"],
    },
  },
};

const tracer = trace.getTracer("node-calculator-agent", "0.1.0");

/** Evaluates `+ - * / ( )` over decimal numbers; throws on anything else (no eval). */
export function calculate(expression) {
  const tokens = String(expression).match(/\d+(?:\.\d+)?|[-+*/()]|\S/g) ?? [];
  let position = 0;
  const peek = () => tokens[position];
  const take = () => tokens[position++];
  const primary = () => {
    const token = take();
    if (token === "(") {
      const value = sum();
      if (take() !== ")") throw new Error("missing ')'");
      return value;
    }
    if (token === "-") return -primary();
    if (token !== undefined && /^\d/.test(token)) return Number(token);
    throw new Error(`unexpected ${token === undefined ? "end of expression" : `'${token}'`}`);
  };
  const product = () => {
    let value = primary();
    while (peek() === "*" || peek() === "/") value = take() === "*" ? value * primary() : value / primary();
    return value;
  };
  const sum = () => {
    let value = product();
    while (peek() === "+" || peek() === "-") value = take() === "+" ? value + product() : value - product();
    return value;
  };
  const value = sum();
  if (position !== tokens.length) throw new Error(`unexpected '${tokens[position]}'`);
  if (!Number.isFinite(value)) throw new Error("result is not a finite number");
  return value;
}

/** The number after 'Answer:', or else the last number in the text. */
export function parseAnswer(text) {
  if (!text) return null;
  const tagged = /Answer:\s*\$?(-?[\d,]*\.?\d+)/.exec(text);
  const numbers = tagged ? [tagged[1]] : (text.match(/-?\d[\d,]*\.?\d*/g) ?? []);
  if (numbers.length === 0) return null;
  const value = Number(numbers[numbers.length - 1].replace(/,/g, ""));
  return Number.isFinite(value) ? value : null;
}

function runTool(call) {
  // One span per tool call, named and attributed like the OpenTelemetry GenAI conventions suggest.
  return tracer.startActiveSpan("tool.calculator", (span) => {
    span.setAttribute("gen_ai.operation.name", "execute_tool");
    span.setAttribute("gen_ai.tool.name", call.function.name);
    span.setAttribute("gen_ai.tool.call.id", call.id);
    span.setAttribute("gen_ai.tool.call.arguments", call.function.arguments ?? "");
    try {
      const { expression } = JSON.parse(call.function.arguments || "{}");
      const result = String(calculate(expression));
      span.setAttribute("gen_ai.tool.call.result", result);
      return result;
    } catch (error) {
      span.recordException(error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: String(error.message ?? error) });
      return `error: ${error.message ?? error}`;
    } finally {
      span.end();
    }
  });
}

/**
 * Solve one task. `task` is `{question, answer}`; `llm` is `{baseURL, model, apiKey, samplingParameters, headers}`;
 * `signal` aborts the model calls. Returns the reward: 1 for the right answer, else 0.
 */
export async function calculatorAgent(task, llm, { signal } = {}) {
  const client = new OpenAI({
    baseURL: llm.baseURL,
    apiKey: llm.apiKey || "unused",
    defaultHeaders: llm.headers,
    maxRetries: 0,
  });
  const messages = [
    { role: "system", content: SYSTEM_PROMPT },
    { role: "user", content: task.question },
  ];
  let finalText = null;
  for (let turn = 0; turn < MAX_TURNS; turn++) {
    const completion = await client.chat.completions.create(
      { ...llm.samplingParameters, model: llm.model, messages, tools: [CALCULATOR_TOOL] },
      { signal },
    );
    const message = completion.choices[0].message;
    messages.push(message);
    finalText = message.content;
    if (!message.tool_calls?.length) break;
    for (const call of message.tool_calls) {
      messages.push({ role: "tool", tool_call_id: call.id, content: runTool(call) });
    }
  }
  const answer = parseAnswer(finalText);
  return answer !== null && Math.abs(answer - Number(task.answer)) < 1e-6 ? 1 : 0;
}
