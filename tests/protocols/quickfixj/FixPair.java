// A QuickFIX/J acceptor (the "exchange") and initiator (the "broker") in one JVM over loopback,
// for tests/protocols/test_quickfixj_kernel.py. Orders are sent one at a time; each is acked
// (ExecutionReport New), every third one is then cancelled. Prints one JSON line per order with
// the engine's own stamps: the order's SendingTime and the instant the initiator received the ack.
// SendingTime is stamped before QuickFIX/J hands the message to MINA's I/O thread, and the
// application sees the ack after MINA's I/O thread and QuickFIX/J's message-processor thread: two
// thread hand-offs each way. So the initiator's filter chain also stamps the wire itself: a MINA
// filter at the head of the chain (closest to the socket) stamps when MINA reports an order's
// bytes written (messageSent) and when an ExecutionReport's bytes were read (messageReceived).
import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.mina.core.buffer.IoBuffer;
import org.apache.mina.core.filterchain.IoFilterAdapter;
import org.apache.mina.core.filterchain.IoFilterChain;
import org.apache.mina.core.session.IoSession;
import org.apache.mina.core.write.WriteRequest;
import quickfix.*;
import quickfix.field.*;

public class FixPair {
    static long nowNs() {
        Instant i = Instant.now();
        return i.getEpochSecond() * 1_000_000_000L + i.getNano();
    }

    /** Tag 11 (ClOrdID) of every message of type {@code msgType} in these bytes. */
    static java.util.List<String> clOrdIds(IoBuffer buf, String msgType) {
        IoBuffer d = buf.duplicate();
        byte[] b = new byte[d.remaining()];
        d.get(b);
        java.util.List<String> out = new java.util.ArrayList<>();
        String type = null;
        for (String f : new String(b, StandardCharsets.ISO_8859_1).split("\u0001")) {
            if (f.startsWith("8=")) type = null;
            else if (f.startsWith("35=")) type = f.substring(3);
            else if (f.startsWith("11=") && msgType.equals(type)) out.add(f.substring(3));
        }
        return out;
    }

    /** Head-of-chain MINA filter: when an order's bytes were written, when an ack's bytes were read. */
    static class WireStamps extends IoFilterAdapter {
        final Map<String, Long> orderSent = new ConcurrentHashMap<>();
        final Map<String, Long> ackRead = new ConcurrentHashMap<>();
        final Map<Object, String> pending = java.util.Collections.synchronizedMap(new IdentityHashMap<>());

        @Override
        public void messageReceived(NextFilter next, IoSession s, Object msg) throws Exception {
            long t = nowNs();
            if (msg instanceof IoBuffer) for (String cl : clOrdIds((IoBuffer) msg, "8")) ackRead.putIfAbsent(cl, t);
            next.messageReceived(s, msg);
        }

        @Override
        public void filterWrite(NextFilter next, IoSession s, WriteRequest req) throws Exception {
            Object msg = req.getMessage();
            if (msg instanceof IoBuffer) for (String cl : clOrdIds((IoBuffer) msg, "D")) pending.put(msg, cl);
            next.filterWrite(s, req);
        }

        @Override
        public void messageSent(NextFilter next, IoSession s, WriteRequest req) throws Exception {
            long t = nowNs();
            String cl = pending.remove(req.getMessage());
            if (cl != null) orderSent.putIfAbsent(cl, t);
            next.messageSent(s, req);
        }
    }

    static class Exchange extends MessageCracker implements Application {
        int orders = 0;
        public void onCreate(SessionID s) {}
        public void onLogon(SessionID s) {}
        public void onLogout(SessionID s) {}
        public void toAdmin(Message m, SessionID s) {}
        public void fromAdmin(Message m, SessionID s) {}
        public void toApp(Message m, SessionID s) {}
        public void fromApp(Message m, SessionID s) throws FieldNotFound, IncorrectTagValue, UnsupportedMessageType {
            String type = m.getHeader().getString(MsgType.FIELD);
            quickfix.fix44.ExecutionReport er;
            if (type.equals(MsgType.ORDER_SINGLE)) {
                orders++;
                er = new quickfix.fix44.ExecutionReport(new OrderID("O" + orders), new ExecID("E" + orders),
                        new ExecType(ExecType.NEW), new OrdStatus(OrdStatus.NEW), new Side(Side.BUY),
                        new LeavesQty(m.getDouble(OrderQty.FIELD)), new CumQty(0), new AvgPx(0));
                er.setString(ClOrdID.FIELD, m.getString(ClOrdID.FIELD));
            } else if (type.equals(MsgType.ORDER_CANCEL_REQUEST)) {
                er = new quickfix.fix44.ExecutionReport(new OrderID("C" + orders), new ExecID("X" + orders),
                        new ExecType(ExecType.CANCELED), new OrdStatus(OrdStatus.CANCELED), new Side(Side.BUY),
                        new LeavesQty(0), new CumQty(0), new AvgPx(0));
                er.setString(ClOrdID.FIELD, m.getString(ClOrdID.FIELD));
                er.setString(OrigClOrdID.FIELD, m.getString(OrigClOrdID.FIELD));
            } else {
                return;
            }
            er.setString(Symbol.FIELD, "EUR/USD");
            try {
                Session.sendToTarget(er, s);
            } catch (SessionNotFound e) {
                throw new RuntimeException(e);
            }
        }
    }

    static class Broker implements Application {
        final CountDownLatch logon = new CountDownLatch(1);
        final BlockingQueue<long[]> acks = new ArrayBlockingQueue<>(1000);
        final BlockingQueue<String> ackIds = new ArrayBlockingQueue<>(1000);
        public void onCreate(SessionID s) {}
        public void onLogon(SessionID s) { logon.countDown(); }
        public void onLogout(SessionID s) {}
        public void toAdmin(Message m, SessionID s) {}
        public void fromAdmin(Message m, SessionID s) {}
        public void toApp(Message m, SessionID s) {}
        public void fromApp(Message m, SessionID s) throws FieldNotFound {
            long t = nowNs();
            ackIds.add(m.getString(ClOrdID.FIELD));
            acks.add(new long[] {t});
        }
    }

    static SessionSettings settings(String body) throws ConfigError {
        return new SessionSettings(new ByteArrayInputStream(body.getBytes(StandardCharsets.UTF_8)));
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        int n = Integer.parseInt(args[1]);
        String common = "[default]\nStartTime=00:00:00\nEndTime=00:00:00\nHeartBtInt=30\nUseDataDictionary=N\n"
                + "TimeStampPrecision=MICROS\nResetOnLogon=Y\nReconnectInterval=1\nSocketTcpNoDelay=Y\n";
        SessionSettings a = settings(common + "ConnectionType=acceptor\nSocketAcceptPort=" + port
                + "\n[session]\nBeginString=FIX.4.4\nSenderCompID=EXCH\nTargetCompID=BROKER\n");
        SessionSettings i = settings(common + "ConnectionType=initiator\nSocketConnectHost=127.0.0.1\nSocketConnectPort="
                + port + "\n[session]\nBeginString=FIX.4.4\nSenderCompID=BROKER\nTargetCompID=EXCH\n");
        Exchange ex = new Exchange();
        Broker br = new Broker();
        SocketAcceptor acceptor = new SocketAcceptor(ex, new MemoryStoreFactory(), a, new ScreenLogFactory(false, false, false), new DefaultMessageFactory());
        acceptor.start();
        SocketInitiator initiator = new SocketInitiator(br, new MemoryStoreFactory(), i, new ScreenLogFactory(false, false, false), new DefaultMessageFactory());
        WireStamps wire = new WireStamps();
        initiator.setIoFilterChainBuilder((IoFilterChain chain) -> chain.addFirst("wire-stamps", wire));
        initiator.start();
        if (!br.logon.await(30, TimeUnit.SECONDS)) throw new IllegalStateException("no logon");
        SessionID sid = new SessionID("FIX.4.4", "BROKER", "EXCH");
        for (int k = 0; k < n; k++) {
            String cl = "QFJ-" + k;
            quickfix.fix44.NewOrderSingle o = new quickfix.fix44.NewOrderSingle(new ClOrdID(cl), new Side(Side.BUY),
                    new TransactTime(), new OrdType(OrdType.LIMIT));
            o.set(new Symbol("EUR/USD"));
            o.set(new OrderQty(1000000));
            o.set(new Price(1.0812));
            Session.sendToTarget(o, sid);
            long[] ack = br.acks.poll(10, TimeUnit.SECONDS);
            String got = br.ackIds.poll(1, TimeUnit.SECONDS);
            if (ack == null || !cl.equals(got)) throw new IllegalStateException("no ack for " + cl);
            System.out.println("{\"cl\": \"" + cl + "\", \"sending_time\": \"" + o.getHeader().getString(SendingTime.FIELD)
                    + "\", \"ack_received_ns\": " + ack[0] + ", \"wire_order_sent_ns\": " + wire.orderSent.getOrDefault(cl, 0L)
                    + ", \"wire_ack_read_ns\": " + wire.ackRead.getOrDefault(cl, 0L) + "}");
            if (k % 3 == 0) {
                quickfix.fix44.OrderCancelRequest c = new quickfix.fix44.OrderCancelRequest(new OrigClOrdID(cl),
                        new ClOrdID("CXL-" + k), new Side(Side.BUY), new TransactTime());
                c.set(new Symbol("EUR/USD"));
                Session.sendToTarget(c, sid);
                if (br.acks.poll(10, TimeUnit.SECONDS) == null) throw new IllegalStateException("no cancel ack");
                br.ackIds.poll(1, TimeUnit.SECONDS);
            }
            Thread.sleep(20);
        }
        System.out.flush();
        initiator.stop();
        acceptor.stop();
    }
}
