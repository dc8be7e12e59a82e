// A QuickFIX/J acceptor (the "exchange") and initiator (the "broker") in one JVM over loopback,
// for tests/protocols/test_quickfixj_kernel.py. Orders are sent one at a time; each is acked
// (ExecutionReport New), every third one is then cancelled. Prints one JSON line per order with
// the engine's own stamps: the order's SendingTime and the instant the initiator received the ack.
import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import quickfix.*;
import quickfix.field.*;

public class FixPair {
    static long nowNs() {
        Instant i = Instant.now();
        return i.getEpochSecond() * 1_000_000_000L + i.getNano();
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
                    + "\", \"ack_received_ns\": " + ack[0] + "}");
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
