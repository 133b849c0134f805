// Apache Flink 2.3 as the reference for weir's window examples: runs one window of an
// example's job on Flink with the same input, watermarks and aggregate, and prints what
// weir's file sinks write, so the examples' expected files come from Flink itself.
//
//   java WindowReference <input.jsonl> <key field> <timestamp field> <out-of-orderness ms>
//        <tumbling|sliding|session> <size or gap ms> <slide ms> <allowed lateness ms>
//        <count|sum|min|max|avg> <field or -> <main out> <late out or ->
//
// Watermarks: max timestamp seen - bound - 1 after every element that advances it (what
// weir's file source does; Flink's periodic generator would depend on wall time).
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Iterator;
import java.util.List;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.WindowAssigner;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

public class WindowReference {
  static final ObjectMapper JSON = new ObjectMapper();

  static JsonNode at(String line, String path) throws Exception {
    JsonNode node = JSON.readTree(line);
    for (String part : path.split("\\.")) node = node.get(part);
    return node;
  }

  /** Emits a watermark after every element that advances the largest timestamp. */
  static class Punctuated implements WatermarkGenerator<String> {
    final long bound;
    long max = Long.MIN_VALUE;
    long emitted = Long.MIN_VALUE;
    Punctuated(long bound) { this.bound = bound; }
    @Override public void onEvent(String e, long ts, WatermarkOutput out) {
      max = Math.max(max, ts);
      long wm = max - bound - 1;
      if (wm > emitted) { emitted = wm; out.emitWatermark(new Watermark(wm)); }
    }
    @Override public void onPeriodicEmit(WatermarkOutput out) {}
  }

  /** count, sum, min, max, avg of one field; sums of integers stay integers. */
  static class Acc { long n; double sum; double min = Double.POSITIVE_INFINITY; double max = Double.NEGATIVE_INFINITY; boolean ints = true; }

  static class Agg implements AggregateFunction<String, Acc, Acc> {
    final String field; final boolean count;
    Agg(String fn, String field) { this.field = field; this.count = fn.equals("count"); }
    public Acc createAccumulator() { return new Acc(); }
    public Acc add(String line, Acc a) {
      a.n++;
      if (!count) {
        try {
          JsonNode v = at(line, field);
          double x = v.asDouble();
          a.sum += x; a.min = Math.min(a.min, x); a.max = Math.max(a.max, x); a.ints &= v.isIntegralNumber();
        } catch (Exception e) { throw new RuntimeException(e); }
      }
      return a;
    }
    public Acc getResult(Acc a) { return a; }
    public Acc merge(Acc a, Acc b) {
      a.n += b.n; a.sum += b.sum; a.min = Math.min(a.min, b.min); a.max = Math.max(a.max, b.max); a.ints &= b.ints;
      return a;
    }
  }

  static String number(double x, boolean integral) {
    if (integral && x == Math.rint(x) && Math.abs(x) < 9.0e15) return Long.toString((long) x);
    return Double.toString(x);
  }

  static class Format extends ProcessWindowFunction<Acc, String, String, TimeWindow> {
    final String fn;
    Format(String fn) { this.fn = fn; }
    @Override public void process(String key, Context ctx, Iterable<Acc> accs, Collector<String> out) {
      Acc a = accs.iterator().next();
      String value;
      switch (fn) {
        case "count": value = Long.toString(a.n); break;
        case "sum": value = number(a.sum, a.ints); break;
        case "min": value = number(a.min, a.ints); break;
        case "max": value = number(a.max, a.ints); break;
        default: value = number(a.sum / a.n, false);
      }
      TimeWindow w = ctx.window();
      out.collect("{\"key\":\"" + key + "\",\"window_start\":" + w.getStart() + ",\"window_end\":" + w.getEnd() + ",\"" + fn + "\":" + value + "}");
    }
  }

  public static void main(String[] args) throws Exception {
    List<String> lines = Files.readAllLines(Path.of(args[0]));
    String keyField = args[1], tsField = args[2];
    long bound = Long.parseLong(args[3]);
    String kind = args[4];
    long size = Long.parseLong(args[5]), slide = Long.parseLong(args[6]), lateness = Long.parseLong(args[7]);
    String fn = args[8], field = args[9];
    StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
    env.setParallelism(1);
    WindowAssigner<Object, TimeWindow> assigner;
    switch (kind) {
      case "tumbling": assigner = TumblingEventTimeWindows.of(Duration.ofMillis(size)); break;
      case "sliding": assigner = SlidingEventTimeWindows.of(Duration.ofMillis(size), Duration.ofMillis(slide)); break;
      default: assigner = EventTimeSessionWindows.withGap(Duration.ofMillis(size));
    }
    OutputTag<String> late = new OutputTag<String>("late") {};
    SingleOutputStreamOperator<String> windows = env.fromData(lines)
        .assignTimestampsAndWatermarks(WatermarkStrategy.<String>forGenerator(c -> new Punctuated(bound))
            .withTimestampAssigner((line, t) -> { try { return at(line, tsField).asLong(); } catch (Exception e) { throw new RuntimeException(e); } }))
        .keyBy(line -> at(line, keyField).asText())
        .window(assigner)
        .allowedLateness(Duration.ofMillis(lateness))
        .sideOutputLateData(late)
        .aggregate(new Agg(fn, field), new Format(fn));
    DataStream<String> all = windows.map(s -> "M" + s).union(windows.getSideOutput(late).map(s -> "L" + s));
    try (PrintWriter main = new PrintWriter(args[10]);
         PrintWriter lateOut = args[11].equals("-") ? null : new PrintWriter(args[11])) {
      Iterator<String> it = all.executeAndCollect();
      while (it.hasNext()) {
        String s = it.next();
        if (s.charAt(0) == 'M') main.println(s.substring(1));
        else if (lateOut != null) lateOut.println(s.substring(1));
      }
    }
  }
}
