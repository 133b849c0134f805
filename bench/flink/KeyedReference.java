// Apache Flink 2.3 as the reference for weir's keyed examples and its operator
// conformance suite: the same logic written as Flink DataStream functions with Flink's
// own keyed state, timers, watermarks, state TTL and side outputs, run on the same
// input. What it prints is what the expected files hold (scripts/flink-reference).
//
//   java KeyedReference word-count    <input.jsonl> <out>
//   java KeyedReference sessions      <input.jsonl> <out>
//   java KeyedReference login-anomaly <input.jsonl> <out>
//   java KeyedReference conformance   <input.jsonl> <out> <odd out>
//
// Parallelism 1; each file is in Flink's emission order (so each key's records are in
// the order Flink emitted them). Watermarks: WindowReference.Punctuated (max timestamp
// seen - bound - 1 after every element that advances it, what weir's file source does);
// compile both files together, as scripts/flink-reference does.
//
// Processing time (conformance only): weir's tests run on a clock that follows the
// records (`processing_clock = "records"`: a subtask's processing time is the timestamp
// of the record it processes). Flink's processing time is the wall clock, so this job
// replays the input in real time, SCALE ms of wall clock per ms of the input's time,
// and converts back: TTLs and timer delays are scaled up, fired timers report the
// logical time they were registered for. The suite's input keeps every processing-time
// decision at least 10 logical ms (SCALE * 10 ms of wall clock) from its boundary, so
// scheduling jitter cannot change Flink's answer.
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

public class KeyedReference {
  static final ObjectMapper JSON = new ObjectMapper();
  /** Wall-clock ms per logical ms when replaying processing time. */
  static final long SCALE = 20;

  static JsonNode parse(String line) {
    try { return JSON.readTree(line); } catch (Exception e) { throw new RuntimeException(e); }
  }

  static String quote(String s) {
    try { return JSON.writeValueAsString(s); } catch (Exception e) { throw new RuntimeException(e); }
  }

  static DataStream<String> withTimestamps(DataStream<String> lines, String field, long bound) {
    return lines.assignTimestampsAndWatermarks(WatermarkStrategy.<String>forGenerator(c -> new WindowReference.Punctuated(bound))
        .withTimestampAssigner((line, t) -> parse(line).get(field).asLong()));
  }

  // --- word-count: a tokenizer re-keying words into a keyed running count ---

  static class Count extends KeyedProcessFunction<String, String, String> {
    transient ValueState<Long> count;
    @Override public void open(OpenContext ctx) {
      count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
    }
    @Override public void processElement(String word, Context ctx, Collector<String> out) throws Exception {
      long n = (count.value() == null ? 0 : count.value()) + 1;
      count.update(n);
      out.collect("{\"key\":" + quote(word) + ",\"count\":" + n + "}");
    }
  }

  static DataStream<String> wordCount(StreamExecutionEnvironment env, List<String> lines) {
    return env.fromData(lines)
        .flatMap((String line, Collector<String> out) -> {
          String text = parse(line).get("text").asText();
          StringBuilder word = new StringBuilder();
          for (int i = 0; i <= text.length(); i++) {
            char c = i < text.length() ? text.charAt(i) : ' ';
            if (Character.isLetterOrDigit(c)) { word.append(c); continue; }
            if (word.length() > 0) { out.collect(word.toString().toLowerCase()); word.setLength(0); }
          }
        }, Types.STRING)
        .keyBy(w -> w)
        .process(new Count());
  }

  // --- sessions: a session per user closed by a timer `gap` after its last click ---

  static class Sessions extends KeyedProcessFunction<String, String, String> {
    static final long GAP = 1_800_000;
    transient ValueState<long[]> session; // start, last, clicks
    @Override public void open(OpenContext ctx) {
      session = getRuntimeContext().getState(new ValueStateDescriptor<>("session", long[].class));
    }
    void emit(String user, long[] s, Collector<String> out) {
      out.collect("{\"user\":" + quote(user) + ",\"start\":" + s[0] + ",\"end\":" + s[1] + ",\"clicks\":" + s[2]
          + ",\"duration_ms\":" + (s[1] - s[0]) + "}");
    }
    @Override public void processElement(String line, Context ctx, Collector<String> out) throws Exception {
      long ts = ctx.timestamp();
      long[] old = session.value();
      long[] now;
      if (old != null && ts > old[1] + GAP) {
        ctx.timerService().deleteEventTimeTimer(old[1] + GAP);
        emit(ctx.getCurrentKey(), old, out);
        now = new long[] {ts, ts, 1};
      } else if (old != null) {
        ctx.timerService().deleteEventTimeTimer(old[1] + GAP);
        now = new long[] {Math.min(old[0], ts), Math.max(old[1], ts), old[2] + 1};
      } else {
        now = new long[] {ts, ts, 1};
      }
      ctx.timerService().registerEventTimeTimer(now[1] + GAP);
      session.update(now);
    }
    @Override public void onTimer(long t, OnTimerContext ctx, Collector<String> out) throws Exception {
      long[] s = session.value();
      if (s != null) { emit(ctx.getCurrentKey(), s, out); session.clear(); }
    }
  }

  // --- login-anomaly: five failed logins within five minutes raise an alert ---

  static class LoginAnomaly extends KeyedProcessFunction<String, String, String> {
    static final int THRESHOLD = 5;
    static final long WINDOW = 300_000;
    transient ListState<Long> failures;
    @Override public void open(OpenContext ctx) {
      failures = getRuntimeContext().getListState(new ListStateDescriptor<>("failures", Types.LONG));
    }
    @Override public void processElement(String line, Context ctx, Collector<String> out) throws Exception {
      JsonNode login = parse(line);
      long ts = ctx.timestamp();
      if (login.get("success").asBoolean()) { failures.clear(); return; }
      List<Long> all = new ArrayList<>();
      for (Long f : failures.get()) all.add(f);
      all.add(ts);
      all.sort(null);
      for (int i = 0; i + THRESHOLD <= all.size(); i++) {
        if (all.get(i + THRESHOLD - 1) - all.get(i) <= WINDOW) {
          out.collect("{\"alert\":\"failed-login-burst\",\"user\":" + quote(ctx.getCurrentKey()) + ",\"failures\":" + THRESHOLD
              + ",\"first_ts\":" + all.get(i) + ",\"last_ts\":" + all.get(i + THRESHOLD - 1) + "}");
          failures.clear();
          return;
        }
      }
      failures.add(ts);
      ctx.timerService().registerEventTimeTimer(ts + WINDOW);
    }
    @Override public void onTimer(long t, OnTimerContext ctx, Collector<String> out) throws Exception {
      List<Long> keep = new ArrayList<>();
      for (Long f : failures.get()) if (f > t - WINDOW) keep.add(f);
      failures.update(keep);
    }
  }

  // --- the conformance suite (tests/conformance/README.md) ---

  static final OutputTag<String> ODD = new OutputTag<String>("odd") {};

  static class Conformance extends KeyedProcessFunction<String, String, String> {
    static final long TTL = 100;
    transient ValueState<Long> sum;
    transient ListState<Long> seen;
    transient MapState<String, Long> counts;
    transient ValueState<Long> recent;
    /** Processing-time timers: wall-clock time registered -> logical time. */
    transient MapState<Long, Long> ptimers;
    final long startWall, startLogical;
    Conformance(long startWall, long startLogical) { this.startWall = startWall; this.startLogical = startLogical; }

    @Override public void open(OpenContext ctx) {
      sum = getRuntimeContext().getState(new ValueStateDescriptor<>("sum", Types.LONG));
      seen = getRuntimeContext().getListState(new ListStateDescriptor<>("seen", Types.LONG));
      counts = getRuntimeContext().getMapState(new MapStateDescriptor<>("counts", Types.STRING, Types.LONG));
      ValueStateDescriptor<Long> recentDescriptor = new ValueStateDescriptor<>("recent", Types.LONG);
      // Flink's defaults: refreshed on create and write, expired values never returned.
      recentDescriptor.enableTimeToLive(StateTtlConfig.newBuilder(Duration.ofMillis(TTL * SCALE)).build());
      recent = getRuntimeContext().getState(recentDescriptor);
      ptimers = getRuntimeContext().getMapState(new MapStateDescriptor<>("ptimers", Types.LONG, Types.LONG));
    }

    long sum() throws Exception { return sum.value() == null ? 0 : sum.value(); }

    @Override public void processElement(String line, Context ctx, Collector<String> out) throws Exception {
      JsonNode e = parse(line);
      String op = e.get("op").asText(), k = e.get("k").asText();
      long v = e.get("v").asLong(), ts = e.get("ts").asLong();
      switch (op) {
        case "add": {
          long total = sum() + v;
          sum.update(total);
          seen.add(v);
          String bucket = Long.toString(v % 3);
          Long n = counts.get(bucket);
          counts.put(bucket, (n == null ? 0 : n) + 1);
          StringBuilder s = new StringBuilder("{\"k\":" + quote(k) + ",\"sum\":" + total + ",\"seen\":[");
          boolean first = true;
          for (Long x : seen.get()) { s.append(first ? "" : ",").append(x); first = false; }
          s.append("],\"counts\":{");
          TreeMap<String, Long> sorted = new TreeMap<>();
          for (Map.Entry<String, Long> c : counts.entries()) sorted.put(c.getKey(), c.getValue());
          first = true;
          for (Map.Entry<String, Long> c : sorted.entrySet()) {
            s.append(first ? "" : ",").append(quote(c.getKey())).append(":").append(c.getValue());
            first = false;
          }
          out.collect(s.append("}}").toString());
          break;
        }
        case "timer": ctx.timerService().registerEventTimeTimer(ts + v); break;
        case "cancel": ctx.timerService().deleteEventTimeTimer(ts + v); break;
        case "ttl": recent.update(v); break;
        case "recall": {
          Long r = recent.value();
          out.collect("{\"k\":" + quote(k) + ",\"recent\":" + (r == null ? "null" : r.toString()) + "}");
          break;
        }
        case "ptimer": {
          // The logical now is the record's timestamp; its wall-clock time, where the
          // replay put it.
          long at = startWall + (ts + v - startLogical) * SCALE;
          ptimers.put(at, ts + v);
          ctx.timerService().registerProcessingTimeTimer(at);
          break;
        }
        case "pcancel": {
          long at = startWall + (ts + v - startLogical) * SCALE;
          ptimers.remove(at);
          ctx.timerService().deleteProcessingTimeTimer(at);
          break;
        }
        case "side":
          if (v % 2 != 0) ctx.output(ODD, "{\"k\":" + quote(k) + ",\"v\":" + v + "}");
          else out.collect("{\"k\":" + quote(k) + ",\"v\":" + v + "}");
          break;
        case "rekey": out.collect("{\"from\":" + quote(k) + ",\"v\":" + v + "}"); break;
        case "clear":
          sum.clear(); seen.clear(); counts.clear();
          out.collect("{\"k\":" + quote(k) + ",\"cleared\":true}");
          break;
        default: throw new IllegalArgumentException("unknown op " + op);
      }
    }

    @Override public void onTimer(long t, OnTimerContext ctx, Collector<String> out) throws Exception {
      String k = quote(ctx.getCurrentKey());
      switch (ctx.timeDomain()) {
        case EVENT_TIME: out.collect("{\"k\":" + k + ",\"fired\":" + t + ",\"sum\":" + sum() + "}"); break;
        default:
          out.collect("{\"k\":" + k + ",\"pfired\":" + ptimers.get(t) + ",\"sum\":" + sum() + "}");
          ptimers.remove(t);
      }
    }
  }

  static DataStream<String> conformance(StreamExecutionEnvironment env, List<String> lines) {
    long startLogical = parse(lines.get(0)).get("ts").asLong();
    long startWall = System.currentTimeMillis() + 5_000; // after the job has started
    env.setBufferTimeout(0); // each record goes on at once, not after up to 100 ms
    // Replays the input in real time: each record waits for its moment on the wall clock.
    DataStream<String> paced = env.fromData(lines).map(line -> {
      long due = startWall + (parse(line).get("ts").asLong() - startLogical) * SCALE;
      long wait = due - System.currentTimeMillis();
      if (wait > 0) Thread.sleep(wait);
      return line;
    }, Types.STRING);
    SingleOutputStreamOperator<String> main = withTimestamps(paced, "ts", 0)
        .keyBy(line -> parse(line).get("k").asText())
        .process(new Conformance(startWall, startLogical));
    return main.map(s -> "M" + s).union(main.getSideOutput(ODD).map(s -> "O" + s));
  }

  public static void main(String[] args) throws Exception {
    List<String> lines = Files.readAllLines(Path.of(args[1]));
    lines.removeIf(String::isBlank);
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
    env.setParallelism(1);
    DataStream<String> out;
    switch (args[0]) {
      case "word-count": out = wordCount(env, lines); break;
      case "sessions":
        out = withTimestamps(env.fromData(lines), "ts", 60_000).keyBy(l -> parse(l).get("user").asText()).process(new Sessions());
        break;
      case "login-anomaly":
        out = withTimestamps(env.fromData(lines), "ts", 30_000).keyBy(l -> parse(l).get("user").asText()).process(new LoginAnomaly());
        break;
      case "conformance": out = conformance(env, lines); break;
      default: throw new IllegalArgumentException("unknown reference " + args[0]);
    }
    try (PrintWriter main = new PrintWriter(args[2]);
         PrintWriter odd = args.length > 3 ? new PrintWriter(args[3]) : null) {
      Iterator<String> it = out.executeAndCollect();
      while (it.hasNext()) {
        String s = it.next();
        if (!args[0].equals("conformance")) main.println(s);
        else if (s.charAt(0) == 'M') main.println(s.substring(1));
        else odd.println(s.substring(1));
      }
    }
  }
}
